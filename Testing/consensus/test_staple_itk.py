"""Our STAPLE against SimpleITK's ``STAPLEImageFilter`` on seeded random reader sets, and its edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from MedAnnotAssistLib.core.fusion import staple
from MedAnnotAssistLib.core.metrics import bounding_box, union_box

SETS = 80


def _truth(rng, shape) -> np.ndarray:
    """One to three ellipsoids: a structure with one or more components."""
    grid = np.indices(shape, dtype=np.float64)
    mask = np.zeros(shape, bool)
    for _ in range(rng.integers(1, 4)):
        centre = [rng.uniform(0.3, 0.7) * n for n in shape]
        radius = [rng.uniform(0.1, 0.25) * n for n in shape]
        mask |= sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radius, strict=True)) <= 1
    return mask


def _structured(rng, truth) -> np.ndarray:
    """A reader with the errors people make: eroded, dilated, shifted, slices missed, ragged edge, a blob."""
    error = rng.choice(["erode", "dilate", "shift", "missed", "ragged", "blob"])
    if error == "erode":
        return ndimage.binary_erosion(truth, iterations=int(rng.integers(1, 3)))
    if error == "dilate":
        return ndimage.binary_dilation(truth, iterations=int(rng.integers(1, 3)))
    if error == "shift":
        return np.roll(truth, int(rng.choice([-2, -1, 1, 2])), axis=int(rng.integers(truth.ndim)))
    mask = truth.copy()
    if error == "missed":
        drawn = np.flatnonzero(truth.any(axis=tuple(range(1, truth.ndim))))
        mask[rng.choice(drawn, size=min(drawn.size, int(rng.integers(1, 3))), replace=False)] = False
    elif error == "ragged":
        edge = truth ^ ndimage.binary_erosion(truth)
        mask &= ~(edge & (rng.random(truth.shape) < 0.5))
    else:
        mask |= _truth(rng, truth.shape) & (rng.random() < 0.5)
    return mask


def _reader_set(seed: int) -> tuple[list[np.ndarray], tuple[float, ...], str]:
    """Seeded set: 2-7 readers of a 2-D or 3-D structure, structured (even seeds) or noisy errors, and an
    anisotropic spacing (STAPLE ignores it; the images carry it anyway, as a scan's would)."""
    rng = np.random.default_rng(seed)
    ndim = int(rng.choice([2, 3]))
    shape = tuple(int(n) for n in (rng.integers(24, 64, 2) if ndim == 2 else rng.integers(10, 32, 3)))
    spacing = tuple(float(s) for s in rng.choice([0.5, 0.8, 1.0, 2.5, 5.0], ndim))
    truth = _truth(rng, shape)
    kind = "structured" if seed % 2 == 0 else "noisy"
    readers = int(rng.integers(2, 8))
    if kind == "structured":
        return [_structured(rng, truth) for _ in range(readers)], spacing, kind
    return [truth ^ (rng.random(shape) < rng.uniform(0.005, 0.1)) for _ in range(readers)], spacing, kind


def _simpleitk(masks, spacing, confidence_weight=1.0):
    images = []
    for mask in masks:
        image = sitk.GetImageFromArray(mask.astype(np.uint8))
        image.SetSpacing(spacing[::-1])
        images.append(image)
    fusion = sitk.STAPLEImageFilter()
    fusion.SetForegroundValue(1)
    fusion.SetConfidenceWeight(confidence_weight)
    probability = sitk.GetArrayFromImage(fusion.Execute(images))
    return probability, fusion.GetSensitivity(), fusion.GetSpecificity(), fusion.GetElapsedIterations()


@pytest.mark.parametrize("seed", range(SETS))
def test_staple_equals_simpleitk_on_random_reader_sets(seed):
    masks, spacing, kind = _reader_set(seed)
    weight = 1.0 if seed % 5 else 0.5 + seed / SETS  # every fifth set: ITK's confidence weight too
    probability, sensitivity, specificity, elapsed = _simpleitk(masks, spacing, weight)
    if seed % 3 == 0:  # the crop of the structure plus the count of voxels outside it, as the consensus runs it
        box = union_box([bounding_box(m) for m in masks], masks[0].shape, margin=2)
        outside_voxels = masks[0].size - masks[0][box].size
        ours = staple([m[box] for m in masks], outside_voxels=outside_voxels, confidence_weight=weight)
        outside = np.ones(masks[0].shape, bool)
        outside[box] = False
        nobody = ~np.any([m[box] for m in masks], axis=0)  # the crop's voxels no reader marked, as outside
        if outside.any() and nobody.any():
            assert np.abs(probability[outside] - ours.probability[nobody][0]).max() <= 1e-6
        probability = probability[box]
    else:
        ours = staple(masks, confidence_weight=weight)
    context = f"seed {seed}: {len(masks)} {kind} readers, shape {masks[0].shape}"
    assert ours.converged, context
    assert abs(ours.iterations - (elapsed + 1)) <= 1, context  # ITK reports the iterations before the last
    assert np.abs(ours.probability - probability).max() <= 1e-6, context
    assert np.abs(np.subtract(ours.sensitivity, sensitivity)).max() <= 1e-6, context
    assert np.abs(np.subtract(ours.specificity, specificity)).max() <= 1e-6, context


def test_random_sets_cover_what_the_property_claims():
    sets = [_reader_set(seed) for seed in range(SETS)]
    assert {len(masks) for masks, _, _ in sets} == set(range(2, 8))
    assert {masks[0].ndim for masks, _, _ in sets} == {2, 3}
    assert {kind for _, _, kind in sets} == {"structured", "noisy"}
    assert sum(len(set(spacing)) > 1 for _, spacing, _ in sets) >= SETS // 2


def test_no_reader_marked_anything():
    masks = [np.zeros((3, 4), bool)] * 3
    result = staple(masks)  # ITK: NaN everywhere
    assert result.probability.tolist() == np.zeros((3, 4)).tolist()
    assert np.isnan(result.sensitivity).all() and result.specificity == (1.0, 1.0, 1.0)
    assert result.prior == 0.0 and result.converged


def test_every_reader_marked_everything():
    result = staple([np.ones((2, 2, 2), bool)] * 2)  # ITK: NaN everywhere
    assert result.probability.tolist() == np.ones((2, 2, 2)).tolist()
    assert result.sensitivity == (1.0, 1.0) and np.isnan(result.specificity).all()
    assert result.prior == 1.0 and result.converged


def test_single_voxel():
    split = staple([np.ones(1, bool), np.zeros(1, bool)])
    probability, sensitivity, specificity, _ = _simpleitk([np.ones((1, 1)), np.zeros((1, 1))], (1.0, 1.0))
    assert split.probability.tolist() == [0.5] == probability.ravel().tolist()
    assert split.sensitivity == (1.0, 0.0) == sensitivity and split.specificity == (0.0, 1.0) == specificity
    assert staple([np.ones(1, bool)] * 2).probability.tolist() == [1.0]
    assert staple([np.zeros(1, bool)] * 2).probability.tolist() == [0.0]


def test_confidence_weight_that_pushes_the_prior_above_one_is_refused():
    masks = [np.array([1, 1, 0], bool)] * 2
    with pytest.raises(ValueError, match=r"confidence_weight: 2 makes the prior 1\.33"):
        staple(masks, confidence_weight=2.0)
    with pytest.raises(ValueError, match=r"confidence_weight: expected a number > 0, got 0"):
        staple(masks, confidence_weight=0)
