"""STAPLE, majority vote and disagreement: equal to SimpleITK, right on a known truth, documented ties."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from MedAnnotAssistLib.core.fusion import disagreement, majority_vote, multilabel_staple, staple, vote_fraction
from MedAnnotAssistLib.core.metrics import bounding_box, union_box


def _dice(a, b) -> float:
    return 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


@pytest.fixture(scope="module")
def five_readers(liver_truth):
    """Five readers of the real liver with realistic boundary errors; the last one is the worst."""
    truth = liver_truth
    missed = truth.copy()
    missed[int(np.flatnonzero(truth.any(axis=(1, 2))).mean())] = False  # one slice skipped
    readers = {
        "eroded": ndimage.binary_erosion(truth),
        "dilated": ndimage.binary_dilation(truth),
        "shifted": np.roll(truth, 1, axis=2),
        "missed-slice": missed,
        "careless": ndimage.binary_erosion(np.roll(truth, 2, axis=1), iterations=2),
    }
    return truth, readers


def test_known_truth_staple_beats_the_median_reader_and_ranks_the_worst_last(five_readers):
    truth, readers = five_readers
    names, masks = list(readers), list(readers.values())
    dices = {name: _dice(mask, truth) for name, mask in readers.items()}
    assert min(dices, key=dices.get) == "careless"
    result = staple(masks)
    estimate = result.estimate()
    assert _dice(estimate, truth) > np.median(list(dices.values()))
    assert _dice(estimate, truth) > 0.97
    ranking = [names[i] for i in np.argsort(result.sensitivity)]
    assert ranking[0] == "careless"  # lowest sensitivity
    assert result.converged
    assert result.sensitivity[names.index("dilated")] > 0.99 and result.specificity[names.index("eroded")] > 0.999


def test_staple_on_the_crop_equals_simpleitk_on_the_whole_volume(five_readers):
    truth, readers = five_readers
    masks = list(readers.values())
    whole = sitk.STAPLEImageFilter()
    whole.SetForegroundValue(1)
    expected = sitk.GetArrayFromImage(whole.Execute([sitk.GetImageFromArray(m.astype(np.uint8)) for m in masks]))
    box = union_box([bounding_box(m) for m in masks], truth.shape, margin=2)
    crops = [m[box] for m in masks]
    ours = staple(crops, outside_voxels=truth.size - crops[0].size)
    assert ours.probability == pytest.approx(expected[box], abs=1e-6)
    outside = np.ones(truth.shape, bool)
    outside[box] = False
    assert expected[outside].max() < 1e-5
    assert ours.sensitivity == pytest.approx(whole.GetSensitivity(), abs=1e-9)
    assert ours.specificity == pytest.approx(whole.GetSpecificity(), abs=1e-9)
    assert ours.iterations == whole.GetElapsedIterations() + 1
    assert ours.prior == pytest.approx(sum(m.sum() for m in masks) / (truth.size * len(masks)))


def test_staple_is_exact_for_more_readers_than_the_pattern_table(liver_truth):
    crop = liver_truth[bounding_box(liver_truth)]
    rng = np.random.default_rng(0)
    masks = [crop ^ (rng.random(crop.shape) < 0.02) for _ in range(22)]  # 22 readers: np.unique path
    ours = staple(masks)
    whole = sitk.STAPLEImageFilter()
    expected = sitk.GetArrayFromImage(whole.Execute([sitk.GetImageFromArray(m.astype(np.uint8)) for m in masks]))
    assert ours.probability == pytest.approx(expected, abs=1e-6)
    assert ours.sensitivity == pytest.approx(whole.GetSensitivity(), abs=1e-9)


def test_majority_vote_tie_is_background_and_vote_fraction():
    a = np.array([1, 1, 0, 0], bool)
    b = np.array([1, 0, 1, 0], bool)
    assert majority_vote([a, b]).tolist() == [True, False, False, False]  # two readers: intersection
    c = np.array([1, 1, 1, 0], bool)
    assert majority_vote([a, b, c]).tolist() == [True, True, True, False]
    assert vote_fraction([a, b, c]).tolist() == pytest.approx([1, 2 / 3, 2 / 3, 0])
    assert disagreement([a, b, c], majority_vote([a, b, c])).tolist() == pytest.approx([0, 1 / 3, 1 / 3, 0])


def test_single_reader_staple_returns_that_reader(liver_truth):
    result = staple([liver_truth])
    assert np.array_equal(result.estimate(), liver_truth)
    assert result.sensitivity[0] == pytest.approx(1.0, abs=1e-4)


def test_multilabel_staple_recovers_two_structures(real_readers):
    full, fast, _, _ = real_readers
    region = (slice(None), slice(None), slice(None))
    labelmaps = []
    for labels in (full, fast, full):
        fused = np.zeros(labels.shape, np.uint8)
        fused[labels[region] == 5] = 1
        fused[labels[region] == 1] = 2
        labelmaps.append(fused)
    result = multilabel_staple(labelmaps)
    assert _dice(result == 1, full == 5) > 0.99
    assert _dice(result == 2, full == 1) > 0.99


def test_masks_of_different_shapes_are_refused():
    with pytest.raises(ValueError, match=r"masks\[1\]: shape"):
        staple([np.zeros((3, 3)), np.zeros((3, 4))])
