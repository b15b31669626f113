"""Seeds engine (core watershed and Slicer's GrowCut), AI provenance on segments, accept/reject/refine and
the AI-vs-final statistics on real masks."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from MedAnnotAssistLib.core import provenance as prov
from MedAnnotAssistLib.core.engines import EngineError, Prompts, get_engine
from MedAnnotAssistLib.core.engines.base import EngineInfo, EngineResult, anatomy
from MedAnnotAssistLib.core.jobs import CancelledError
from MedAnnotAssistLib.core.protocol import Code, bundled_protocol


def _dice(a, b):
    return 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


@pytest.fixture(scope="module")
def ct(sample_dir):
    return sitk.ReadImage(str(sample_dir / "example_ct_sm.nii.gz"))


@pytest.fixture(scope="module")
def liver_strokes(real_readers):
    """Sparse strokes inside the real liver and on a ring around it, as an expert would paint."""
    liver = real_readers[0] == 5
    inside = np.argwhere(ndimage.binary_erosion(liver, iterations=3))[::7]
    ring = ndimage.binary_dilation(liver, iterations=4) & ~ndimage.binary_dilation(liver, iterations=2)
    return liver, inside, np.argwhere(ring)[::5]


def test_core_seeds_engine_grows_the_liver_from_strokes(ct, liver_strokes):
    liver, inside, outside = liver_strokes
    result = get_engine("seeds").run(ct, ["liver"], Prompts({"liver": inside}, outside))
    grown = result.mask("liver")
    assert _dice(grown, liver) > 0.9
    assert result.names == {1: "liver"} and result.provenance["engine"] == "seeds"
    assert result.provenance["parameters"]["seeds"] == len(inside)


def test_seeds_engine_errors(ct):
    engine = get_engine("seeds")
    with pytest.raises(EngineError, match="needs at least one structure's seed strokes"):
        engine.run(ct, ["liver"], Prompts())
    with pytest.raises(EngineError, match="seed voxels outside the image"):
        engine.run(ct, ["liver"], Prompts({"liver": np.array([[0, 0, 500]])}))
    with pytest.raises(CancelledError):
        engine.run(ct, ["liver"], Prompts({"liver": np.array([[10, 50, 50]])}), cancel=lambda: True)
    flat = sitk.Image(40, 40, sitk.sitkFloat32)
    with pytest.raises(EngineError, match="needs a 3-D volume"):
        engine.run(flat, ["liver"], Prompts({"liver": np.array([[0, 5, 5]])}))


def test_slicer_growcut_grows_the_liver(context, sample_dir, liver_strokes):
    from MedAnnotAssistLib.mrml.presegment import growFromSeeds
    from MedAnnotAssistLib.mrml.volumes import loadVolume

    liver, inside, outside = liver_strokes
    volume = loadVolume(context, sample_dir / "example_ct_sm.nii.gz")
    seeds = np.zeros(liver.shape, np.int16)
    seeds[tuple(outside.T)] = 2
    seeds[tuple(inside.T)] = 1
    grown = growFromSeeds(context, volume, seeds)
    assert _dice(grown == 1, liver) > 0.9


def _lung_result(real_readers) -> tuple[EngineInfo, EngineResult]:
    """An engine result whose left lung is TotalSegmentator's real left lung (lobes 10 and 11): real masks,
    standing in for any engine's output."""
    full = real_readers[0]
    labels = np.isin(full, (10, 11)).astype(np.uint8)
    lung = Code("SCT", "39607008", "Lung")
    info = EngineInfo(
        "reference", "2.18.0", "TotalSegmentator's labels as a proposal", "CT",
        (anatomy("lung_left", "Left lung", "#d1b3a1", lung, Code("SCT", "7771000", "Left")),),
    )  # fmt: skip
    provenance = {
        "engine": "reference",
        "version": "2.18.0",
        "parameters": {"a|b": "c:d"},
        "started": "2026-11-22T20:00:00+00:00",
    }
    return info, EngineResult(labels, {1: "lung_left"}, {"lung_left": 0.97}, 0.1, provenance)


def test_provenance_tags_round_trip_with_slicer_reserved_characters():
    tags = prov.provenance_tags({"engine": "ct", "version": "1", "parameters": {"t|x": "a:b"}}, 0.5)
    assert "|" not in "".join(tags.values())
    assert prov.read_provenance(tags)["parameters"] == {"t|x": "a:b"}
    with pytest.raises(ValueError, match="state: expected one of"):
        prov.provenance_tags({"engine": "ct", "version": "1"}, 0.5, "maybe")


def test_accept_reject_refine_and_ai_versus_final_on_a_real_lung(context, sample_dir, real_readers, tmp_path):
    from MedAnnotAssistLib.mrml import presegment as ps
    from MedAnnotAssistLib.mrml.segmentation import loadSegmentation, saveSegmentation, segmentMasks, setSegmentMask
    from MedAnnotAssistLib.mrml.volumes import loadVolume

    protocol = bundled_protocol("lung-nodule")
    volume = loadVolume(context, sample_dir / "example_ct_sm.nii.gz")
    info, result = _lung_result(real_readers)
    node = ps.applyEngineResult(context, volume, info, result, protocol=protocol)
    assert ps.reviewState(node, "lung_left") == "suggested"
    recorded = ps.aiProvenance(node, "lung_left")
    assert recorded["engine"] == "reference" and recorded["confidence"] == pytest.approx(0.97)
    assert recorded["parameters"] == {"a|b": "c:d"}

    lung = result.labels == 1
    statistics = ps.aiVersusFinal(node)["lung_left"]
    assert statistics["state"] == "suggested" and statistics["dice"] == 1.0 and statistics["voxels_added"] == 0

    ps.accept(node, "lung_left")
    assert ps.aiVersusFinal(node)["lung_left"]["state"] == "accepted"

    # The expert refines: erodes the lung by one voxel (6-connected). Expected numbers follow from the masks.
    eroded = ndimage.binary_erosion(lung)
    segmentId = ps.segmentByStructureTag(node, "lung_left")
    setSegmentMask(node, segmentId, eroded)
    refined = ps.aiVersusFinal(node)["lung_left"]
    removed = int(lung.sum() - eroded.sum())
    assert refined["state"] == "refined"
    assert refined["voxels_removed"] == removed and refined["voxels_added"] == 0
    assert refined["dice"] == pytest.approx(2 * eroded.sum() / (lung.sum() + eroded.sum()))
    import surface_distance

    distances = surface_distance.compute_surface_distances(lung, eroded, (3.0, 3.0, 3.0))
    assert refined["hd95_mm"] == pytest.approx(surface_distance.compute_robust_hausdorff(distances, 95))
    assert refined["ai_volume_ml"] == pytest.approx(lung.sum() * 27 / 1000, abs=1e-3)

    # Provenance, state and proposal survive a save and load.
    saveSegmentation(node, tmp_path / "case.seg.nrrd")
    again = loadSegmentation(context, tmp_path / "case.seg.nrrd")
    assert ps.aiProvenance(again, "lung_left")["state"] == "accepted"

    ps.reject(node, "lung_left")
    rejected = ps.aiVersusFinal(node)["lung_left"]
    assert rejected["state"] == "rejected" and rejected["voxels_removed"] == int(lung.sum())
    assert segmentMasks(node, [segmentId])[0][segmentId].sum() == 0
    assert node.GetAttribute("MedAnnotAssist.AI.Uncertainty") == "0.1000"


def test_engine_result_off_the_volume_grid_is_refused(context, sample_dir, real_readers):
    from MedAnnotAssistLib.mrml.presegment import applyEngineResult
    from MedAnnotAssistLib.mrml.volumes import loadVolume

    info, result = _lung_result(real_readers)
    result.labels = result.labels[:, :, :-1]
    volume = loadVolume(context, sample_dir / "example_ct_sm.nii.gz")
    with pytest.raises(ValueError, match="not on the volume's grid"):
        applyEngineResult(context, volume, info, result)


def test_image_from_volume_keeps_voxels_and_geometry(context, sample_dir, ct):
    from MedAnnotAssistLib.mrml.presegment import imageFromVolume
    from MedAnnotAssistLib.mrml.volumes import loadVolume

    image = imageFromVolume(loadVolume(context, sample_dir / "example_ct_sm.nii.gz"))
    assert np.array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(ct))
    assert image.GetOrigin() == pytest.approx(ct.GetOrigin(), abs=1e-4)
    assert image.GetDirection() == pytest.approx(ct.GetDirection(), abs=1e-6)
    assert image.GetSpacing() == pytest.approx(ct.GetSpacing())
