"""Protocol rules on TotalSegmentator's real masks of example_ct_sm (../shared/data/totalseg-example)."""

from __future__ import annotations

import pytest

from MedAnnotAssistLib.core.labelio import read_reader
from MedAnnotAssistLib.core.protocol import bundled_protocol
from MedAnnotAssistLib.core.protocol_check import check_reader
from MedAnnotAssistLib.mrml import protocol_segments as ps
from MedAnnotAssistLib.mrml.segmentation import (
    importLabelmapFile,
    saveSegmentation,
    segmentIds,
    segmentMasks,
    setSegmentMask,
)


@pytest.fixture
def abdomen(context, sample_dir, total_labels):
    """The real multi-label segmentation with the abdominal protocol applied."""
    protocol = bundled_protocol("abdominal-organs")
    names = {**total_labels, 64: "portal_vein"}  # TotalSegmentator's portal_vein_and_splenic_vein
    node = importLabelmapFile(context, sample_dir / "example_seg.nii.gz", names)
    ps.applyProtocol(node, protocol)
    return node, protocol


def _mask(node, protocol, structure_id):
    segment_id = ps.structureSegments(node, protocol)[structure_id]
    return segmentMasks(node, [segment_id])[0][segment_id]


def _set(node, protocol, structure_id, mask):
    setSegmentMask(node, ps.structureSegments(node, protocol)[structure_id], mask)


def test_real_segmentation_as_is(abdomen):
    node, protocol = abdomen
    check = ps.checkSegmentation(node, protocol)
    liver = check.structure("liver")
    assert liver.state == "complete"
    assert liver.voxels == 38634
    assert liver.volume_ml == pytest.approx(38634 * 27 / 1000)  # 3 mm isotropic voxels
    assert [r.passed for r in liver.results] == [True] * len(liver.results)
    assert check.structure("kidney_left").state == "complete"
    assert check.structure("portal_vein").voxels == 901
    # This CT is cropped to 30 slices: the pancreas is cut into pieces and too small for an adult's.
    pancreas = check.structure("pancreas")
    assert pancreas.components == 3
    assert [r.rule for r in pancreas.blocking] == ["volumeMl", "maxComponents"]
    assert check.blocking_messages() == [
        "Pancreas: volume 17.4 ml, expected 20-200 ml",
        "Pancreas: 3 connected component(s), at most 1 allowed",
    ]


def test_empty_required_structure(abdomen):
    node, protocol = abdomen
    spleen = _mask(node, protocol, "spleen")
    _set(node, protocol, "spleen", spleen & False)
    check = ps.checkSegmentation(node, protocol)
    assert check.structure("spleen").state == "pending"
    assert "Spleen: required structure is empty" in check.blocking_messages()
    assert ps.structureStatus(node, protocol)["spleen"] == "pending"
    assert not check.ready


def test_two_components_where_one_is_allowed(abdomen):
    node, protocol = abdomen
    both_kidneys = _mask(node, protocol, "kidney_left") | _mask(node, protocol, "kidney_right")
    _set(node, protocol, "kidney_left", both_kidneys)
    check = ps.checkSegmentation(node, protocol)
    left = check.structure("kidney_left")
    assert left.state == "drafted"
    assert left.components == 2
    assert "2 connected component(s), at most 1 allowed" in [r.message for r in left.blocking]
    assert ps.structureStatus(node, protocol)["kidney_left"] == "drafted"


def test_structure_on_the_wrong_side(abdomen):
    node, protocol = abdomen
    _set(node, protocol, "kidney_left", _mask(node, protocol, "kidney_right"))
    check = ps.checkSegmentation(node, protocol)
    laterality = next(r for r in check.structure("kidney_left").results if r.rule == "laterality")
    assert laterality.passed is False
    assert "to the patient's right of the centre of Aorta, expected left" in laterality.message


def test_structure_outside_its_parent(context, sample_dir, total_labels):
    protocol = bundled_protocol("liver-lesion")
    node = importLabelmapFile(context, sample_dir / "example_seg.nii.gz", total_labels)
    ps.applyProtocol(node, protocol)
    liver = _mask(node, protocol, "liver")
    # A "lesion" drawn on the real right kidney lies entirely outside the real liver ...
    kidney = next(
        masks[i]
        for masks in [segmentMasks(node)[0]]
        for i in masks
        if node.GetSegmentation().GetSegment(i).GetName() == "kidney_right"
    )
    _set(node, protocol, "liver_lesion", kidney)
    check = ps.checkSegmentation(node, protocol)
    inside = next(r for r in check.structure("liver_lesion").results if r.rule == "inside")
    assert inside.passed is False and inside.value == pytest.approx(0.0)
    assert inside.message == "0.0% inside Liver, at least 90% required"
    assert check.structure("liver_lesion").state == "drafted"
    # ... while one drawn within the liver passes.
    lesion = liver.copy()
    lesion[:, :, : lesion.shape[2] // 2] = False
    _set(node, protocol, "liver_lesion", lesion)
    check = ps.checkSegmentation(node, protocol)
    assert check.structure("liver_lesion").state == "complete"


# --- the queue server's engine on the file Slicer writes gives Slicer's verdicts ---------------------------


def _as_is(node, protocol):
    pass


def _spleen_emptied(node, protocol):
    _set(node, protocol, "spleen", _mask(node, protocol, "spleen") & False)


def _kidneys_merged(node, protocol):  # overlapping segments: Slicer writes a second label layer
    _set(node, protocol, "kidney_left", _mask(node, protocol, "kidney_left") | _mask(node, protocol, "kidney_right"))


def _kidney_on_the_wrong_side(node, protocol):
    _set(node, protocol, "kidney_left", _mask(node, protocol, "kidney_right"))


def _gallbladder_declared_absent_but_drawn(node, protocol):
    ps.declareAbsent(node, protocol, "gallbladder")


def _gallbladder_declared_absent(node, protocol):
    _set(node, protocol, "gallbladder", _mask(node, protocol, "gallbladder") & False)
    ps.declareAbsent(node, protocol, "gallbladder")


def _aorta_emptied(node, protocol):  # every laterality rule's midline: "cannot check"
    _set(node, protocol, "aorta", _mask(node, protocol, "aorta") & False)


CHANGES = [
    _as_is,
    _spleen_emptied,
    _kidneys_merged,
    _kidney_on_the_wrong_side,
    _gallbladder_declared_absent_but_drawn,
    _gallbladder_declared_absent,
    _aorta_emptied,
]


def _server_check(node, protocol, path):
    """What the queue server computes on the file a reader uploads: the absent declarations travel in the
    submission's metadata (``segments.<id>.state``), the masks in the ``.seg.nrrd``."""
    saveSegmentation(node, path)
    absent = [sid for sid, state in ps.structureStatus(node, protocol).items() if state == "absent"]
    return check_reader(protocol, read_reader(path, protocol), declared_absent=absent)


@pytest.mark.parametrize("change", CHANGES, ids=lambda change: change.__name__.strip("_"))
def test_server_engine_gives_slicers_verdicts(abdomen, tmp_path, change):
    node, protocol = abdomen
    change(node, protocol)
    in_slicer = ps.checkSegmentation(node, protocol, updateStatus=False)
    on_server = _server_check(node, protocol, tmp_path / "reader.seg.nrrd")
    assert on_server.to_json() == in_slicer.to_json()
    assert on_server.blocking_messages() == in_slicer.blocking_messages()


def test_server_engine_gives_slicers_verdicts_inside(context, sample_dir, total_labels, tmp_path):
    protocol = bundled_protocol("liver-lesion")
    node = importLabelmapFile(context, sample_dir / "example_seg.nii.gz", total_labels)
    ps.applyProtocol(node, protocol)
    kidney = next(i for i in segmentIds(node) if node.GetSegmentation().GetSegment(i).GetName() == "kidney_right")
    lesion = segmentMasks(node, [kidney])[0][kidney]
    lesion[:, :, : lesion.shape[2] // 2] |= _mask(node, protocol, "liver")[:, :, : lesion.shape[2] // 2]
    _set(node, protocol, "liver_lesion", lesion)  # partly in the liver, partly on the kidney
    in_slicer = ps.checkSegmentation(node, protocol, updateStatus=False)
    inside = next(r for r in in_slicer.structure("liver_lesion").results if r.rule == "inside")
    assert inside.passed is False and 0 < inside.value < 0.9
    assert _server_check(node, protocol, tmp_path / "lesion.seg.nrrd").to_json() == in_slicer.to_json()
