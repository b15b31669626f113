"""Pairwise metrics against independent computations: DeepMind's surface-distance, SimpleITK's filters,
the published test cases of surface-distance, and the documented empty-mask values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk

from MedAnnotAssistLib.core.metrics import pairwise_metrics

surface_distance = pytest.importorskip("surface_distance")

STRUCTURES = {5: "liver", 1: "spleen", 2: "kidney_right", 3: "kidney_left", 7: "pancreas", 52: "aorta", 64: "portal"}
SPACINGS = {"sample 3 mm": None, "anisotropic": (2.5, 0.8, 1.2)}


def _deepmind(a, b, spacing, tolerance):
    distances = surface_distance.compute_surface_distances(a, b, spacing)
    return {
        "dice": surface_distance.compute_dice_coefficient(a, b),
        "hd": surface_distance.compute_robust_hausdorff(distances, 100),
        "hd95": surface_distance.compute_robust_hausdorff(distances, 95),
        "asd": surface_distance.compute_average_surface_distance(distances),
        "surface_dice": surface_distance.compute_surface_dice_at_tolerance(distances, tolerance),
        "distances": distances,
    }


def _image(mask, spacing):
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    image.SetSpacing(tuple(reversed(spacing)))
    return image


@pytest.mark.parametrize("spacing_name", SPACINGS)
@pytest.mark.parametrize("value", STRUCTURES, ids=STRUCTURES.values())
def test_real_readers_equal_surface_distance_and_simpleitk(real_readers, value, spacing_name):
    full, fast, sample_spacing, _ = real_readers
    spacing = SPACINGS[spacing_name] or sample_spacing
    a, b = full == value, fast == value
    [ours] = pairwise_metrics([a, b], spacing, ["full", "fast"], tolerance_mm=2.0)
    theirs = _deepmind(a, b, spacing, 2.0)
    assert ours.dice == pytest.approx(theirs["dice"], abs=1e-6)
    assert ours.hd_mm == pytest.approx(theirs["hd"], abs=1e-3)
    assert ours.hd95_mm == pytest.approx(theirs["hd95"], abs=1e-3)
    assert ours.asd_ab_mm == pytest.approx(theirs["asd"][0], abs=1e-3)
    assert ours.asd_ba_mm == pytest.approx(theirs["asd"][1], abs=1e-3)
    assert ours.surface_dice == pytest.approx(theirs["surface_dice"], abs=1e-6)
    # ASSD pools both surfaces, weighted by area: recomputed here from their distances and areas.
    d = theirs["distances"]
    pooled = (d["distances_gt_to_pred"] @ d["surfel_areas_gt"] + d["distances_pred_to_gt"] @ d["surfel_areas_pred"]) / (
        d["surfel_areas_gt"].sum() + d["surfel_areas_pred"].sum()
    )
    assert ours.assd_mm == pytest.approx(pooled, abs=1e-3)

    overlap = sitk.LabelOverlapMeasuresImageFilter()
    overlap.Execute(_image(a, spacing), _image(b, spacing))
    assert ours.dice == pytest.approx(overlap.GetDiceCoefficient(), abs=1e-6)
    assert ours.jaccard == pytest.approx(overlap.GetJaccardCoefficient(), abs=1e-6)
    assert ours.volume_similarity == pytest.approx(overlap.GetVolumeSimilarity(), abs=1e-6)
    voxel_ml = np.prod(spacing) / 1000
    assert ours.volume_a_ml == pytest.approx(a.sum() * voxel_ml)
    assert ours.volume_diff_ml == pytest.approx((b.sum() - a.sum()) * voxel_ml)

    [voxels] = pairwise_metrics([a, b], spacing, ["full", "fast"], convention="voxels")
    hausdorff = sitk.HausdorffDistanceImageFilter()
    hausdorff.Execute(_image(a, spacing), _image(b, spacing))
    assert voxels.hd_mm == pytest.approx(hausdorff.GetHausdorffDistance(), abs=1e-3)
    assert voxels.assd_mm == pytest.approx(hausdorff.GetAverageHausdorffDistance(), abs=1e-3)
    assert voxels.dice == ours.dice and voxels.surface_dice == ours.surface_dice


def test_values_on_the_real_readers_are_what_a_reader_would_expect(real_readers):
    full, fast, spacing, _ = real_readers
    liver, pancreas = (
        pairwise_metrics([full == 5, fast == 5], spacing)[0],
        pairwise_metrics([full == 7, fast == 7], spacing)[0],
    )
    assert liver.dice == pytest.approx(0.98136, abs=1e-5)
    assert pancreas.dice == pytest.approx(0.80872, abs=1e-5)
    assert pancreas.hd95_mm == pytest.approx(math.sqrt(18), abs=1e-6)  # one diagonal step of 3 mm voxels
    assert liver.hd95_mm == pytest.approx(3.0)


def _published(ours, asd, hd, hd95, surface_dice, dice):
    assert (ours.asd_ab_mm, ours.asd_ba_mm) == pytest.approx(asd, abs=1e-3)
    assert ours.hd_mm == pytest.approx(hd, abs=1e-3)
    assert ours.hd95_mm == pytest.approx(hd95, abs=1e-3)
    assert ours.surface_dice == pytest.approx(surface_dice, abs=1e-3)
    assert ours.dice == pytest.approx(dice, abs=1e-3)


def test_published_case_two_voxels_2mm_apart_3d():
    a, b = np.zeros((128, 128, 128), bool), np.zeros((128, 128, 128), bool)
    a[50, 60, 70] = b[50, 60, 72] = True
    [ours] = pairwise_metrics([a, b], (3, 2, 1), tolerance_mm=1)
    _published(ours, (1.5, 1.5), 2.0, 2.0, 0.5, 0.0)


def test_published_case_two_pixels_2mm_apart_2d():
    a, b = np.zeros((128, 128), bool), np.zeros((128, 128), bool)
    a[50, 70] = b[50, 72] = True
    [ours] = pairwise_metrics([a, b], (2, 1), tolerance_mm=1)
    _published(ours, (1.5, 1.5), 2.0, 2.0, 0.5, 0.0)


def test_published_case_two_slabs_shifted_by_one_voxel():
    a, b = np.zeros((100, 100, 100), bool), np.zeros((100, 100, 100), bool)
    a[0:50] = True
    b[0:51] = True
    [ours] = pairwise_metrics([a, b], (2, 1, 1), tolerance_mm=1)
    _published(ours, (0.322, 0.339), 2.0, 2.0, 0.836, 0.990)


def test_2d_squares_match_surface_distance():
    a = np.zeros((6, 6), bool)
    b = np.zeros((6, 6), bool)
    a[1:3, 1:3] = True
    b[1:4, 1:3] = True
    [ours] = pairwise_metrics([a, b], (2, 1), tolerance_mm=1)
    theirs = _deepmind(a, b, (2, 1), 1)
    assert (ours.asd_ab_mm, ours.asd_ba_mm) == pytest.approx(theirs["asd"])
    assert ours.surface_dice == pytest.approx(theirs["surface_dice"])
    assert ours.volume_a_ml == pytest.approx(4 * 2 / 100)  # 2-D: area in cm²


def test_empty_masks_have_documented_values():
    a, b, none = np.zeros((20, 20, 20), bool), np.zeros((20, 20, 20), bool), np.zeros((20, 20, 20), bool)
    a[5:10, 5:10, 5:10] = True
    b[6:11, 5:10, 5:10] = True
    ab, a_none, b_none = pairwise_metrics([a, b, none], (1, 1, 1))[:2] + pairwise_metrics([none, b], (1, 1, 1))
    assert ab.empty is None and 0 < ab.dice < 1
    assert a_none.empty == "b" and a_none.dice == 0 and a_none.surface_dice == 0
    assert math.isinf(a_none.hd_mm) and math.isinf(a_none.hd95_mm) and math.isinf(a_none.assd_mm)
    assert a_none.as_dict()["hd_mm"] is None  # JSON has no infinity
    assert b_none.empty == "a" and b_none.volume_diff_ml == pytest.approx(0.125)
    [both] = pairwise_metrics([none, none], (1, 1, 1))
    assert (both.empty, both.dice, both.jaccard, both.surface_dice) == ("both", 1.0, 1.0, 1.0)
    assert (both.hd_mm, both.hd95_mm, both.assd_mm) == (0.0, 0.0, 0.0)


def test_empty_masks_deepmind_option_gives_their_values():
    a, none = np.zeros((128, 128, 128), bool), np.zeros((128, 128, 128), bool)
    a[50, 60, 70] = True
    [one] = pairwise_metrics([a, none], (3, 2, 1), empty="deepmind", tolerance_mm=1)
    assert (one.dice, one.surface_dice) == (0.0, 0.0)
    assert math.isinf(one.hd_mm) and math.isinf(one.hd95_mm)
    assert math.isinf(one.asd_ab_mm) and math.isnan(one.asd_ba_mm)  # their published (inf, nan)
    [both] = pairwise_metrics([none, none], (3, 2, 1), empty="deepmind")
    assert math.isnan(both.dice) and math.isnan(both.surface_dice) and math.isinf(both.hd_mm)
    assert math.isnan(both.asd_ab_mm) and math.isnan(both.asd_ba_mm)


def test_all_pairs_in_order_and_reuse_gives_the_pairwise_values(real_readers):
    full, fast, spacing, _ = real_readers
    masks = [full == 5, fast == 5, np.roll(full == 5, 1, axis=2)]
    pairs = pairwise_metrics(masks, spacing, ["r1", "r2", "r3"])
    assert [(p.a, p.b) for p in pairs] == [("r1", "r2"), ("r1", "r3"), ("r2", "r3")]
    for pair, (i, j) in zip(pairs, [(0, 1), (0, 2), (1, 2)], strict=True):
        [alone] = pairwise_metrics([masks[i], masks[j]], spacing, [pair.a, pair.b])
        assert pair == alone


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"masks": [np.zeros((4, 4, 4)), np.zeros((4, 4, 5))], "spacing": (1, 1, 1)}, r"masks\[1\]: shape"),
        ({"masks": [np.zeros((4, 4, 4))], "spacing": (1, 1)}, "spacing: expected 3 positive values"),
        ({"masks": [np.zeros((4, 4, 4))], "spacing": (1, 0, 1)}, "spacing: expected 3 positive values"),
        ({"masks": [np.zeros(4)], "spacing": (1,)}, "2-D or 3-D"),
        ({"masks": [np.zeros((4, 4))], "spacing": (1, 1), "convention": "mesh"}, "convention: expected"),
        ({"masks": [np.zeros((4, 4))], "spacing": (1, 1), "names": ["a", "b"]}, "2 names for 1 masks"),
    ],
)
def test_bad_input_gets_a_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        pairwise_metrics(**kwargs)
