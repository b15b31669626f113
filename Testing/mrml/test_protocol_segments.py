"""Protocols applied to real Slicer segmentations on slicer-core: create, match, save, reload."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import slicer

from MedAnnotAssistLib.core.protocol import bundled_protocol, bundled_protocols
from MedAnnotAssistLib.core.protocol_check import PENDING
from MedAnnotAssistLib.core.terminology import from_slicer_string, to_slicer_string
from MedAnnotAssistLib.mrml import protocol_segments as ps
from MedAnnotAssistLib.mrml.segmentation import (
    getTag,
    importLabelmapFile,
    loadSegmentation,
    newSegmentation,
    saveSegmentation,
    segmentIds,
    segmentMasks,
)
from MedAnnotAssistLib.mrml.volumes import loadVolume


def _segments(node):
    segmentation = node.GetSegmentation()
    return [segmentation.GetSegment(i) for i in segmentIds(node)]


def test_headless_scene_has_slicers_terminologies(context):
    assert "Segmentation category and type - DICOM master list" in context.loadedTerminologyNames()
    assert context.applicationLogic.GetModuleLogic("Segmentations") is context.segmentationsLogic
    assert context.applicationLogic.GetModuleLogic("Colors") is context.colorLogic


def test_our_terminology_string_is_slicers(context):
    """Slicer's own serializer writes the same string for every bundled structure's codes."""
    logic = context.terminologiesLogic
    for protocol in bundled_protocols():
        for s in protocol.structures:
            t = s.terminology

            def parts(code):
                return (code.value, code.scheme, code.meaning) if code else ("", "", "")

            expected = logic.SerializeTerminologyEntry(
                "Segmentation category and type - DICOM master list",
                *parts(t.category),
                *parts(t.type),
                *parts(t.type_modifier),
                "Anatomic codes - DICOM master list",
                *parts(t.anatomic_region),
                *parts(t.anatomic_region_modifier),
            )
            assert to_slicer_string(t) == expected, (protocol.id, s.id)


@pytest.mark.parametrize("protocol_id", ["abdominal-organs", "head-neck-oar", "lung-nodule", "liver-lesion"])
def test_apply_save_reload_keeps_everything(context, sample_dir, tmp_path, protocol_id):
    protocol = bundled_protocol(protocol_id)
    ct = loadVolume(context, sample_dir / "example_ct_sm.nii.gz")
    node = newSegmentation(context, ct)
    report = ps.applyProtocol(node, protocol)
    assert report.created == [s.id for s in protocol.structures if s.kind == "segment"]

    path = saveSegmentation(node, tmp_path / f"{protocol_id}.seg.nrrd")
    reloaded = loadSegmentation(context, path)

    segments = _segments(reloaded)
    assert [s.GetName() for s in segments] == [s.name for s in protocol.structures]
    for segment, structure in zip(segments, protocol.structures, strict=True):
        assert segment.GetColor() == pytest.approx(structure.color_rgb, abs=1e-5)
        assert from_slicer_string(getTag(segment, "TerminologyEntry")) == structure.terminology
        assert getTag(segment, ps.STRUCTURE_TAG) == structure.id
        assert getTag(segment, ps.PROTOCOL_TAG) == protocol.label
        assert getTag(segment, ps.CHECKSUM_TAG) == protocol.checksum
        assert getTag(segment, ps.STATUS_TAG) == PENDING
        assert slicer.vtkSlicerSegmentationsModuleLogic.GetSegmentStatus(segment) == 0  # Slicer's NotStarted
    assert ps.protocolLabelOf(reloaded) == protocol.label
    # The file carries the CT's grid, so any reader sees the segments aligned with the image.
    seg_image, ct_image = sitk.ReadImage(str(path)), sitk.ReadImage(str(sample_dir / "example_ct_sm.nii.gz"))
    assert seg_image.GetSize()[:3] == ct_image.GetSize()
    assert seg_image.GetOrigin() == pytest.approx(ct_image.GetOrigin(), abs=1e-3)
    assert seg_image.GetSpacing()[:3] == pytest.approx(ct_image.GetSpacing())


def test_status_survives_round_trip_after_drawing(context, sample_dir, tmp_path, total_labels):
    protocol = bundled_protocol("abdominal-organs")
    node = importLabelmapFile(context, sample_dir / "example_seg.nii.gz", total_labels)
    ps.applyProtocol(node, protocol)
    ps.declareAbsent(node, protocol, "superior_mesenteric_artery")
    ps.checkSegmentation(node, protocol)
    before = ps.structureStatus(node, protocol)
    reloaded = loadSegmentation(context, saveSegmentation(node, tmp_path / "drawn.seg.nrrd"))
    assert ps.structureStatus(reloaded, protocol) == before
    assert before["liver"] == "complete" and before["pancreas"] == "drafted"
    assert before["superior_mesenteric_artery"] == "absent"
    masks, _ = segmentMasks(reloaded, [ps.structureSegments(reloaded, protocol)["liver"]])
    reference = sitk.GetArrayFromImage(sitk.ReadImage(str(sample_dir / "example_seg.nii.gz")))
    assert np.array_equal(next(iter(masks.values())), reference == 5)  # 5 is TotalSegmentator's liver


def test_existing_segments_are_matched_not_duplicated(context, sample_dir, total_labels):
    protocol = bundled_protocol("abdominal-organs")
    node = importLabelmapFile(context, sample_dir / "example_seg.nii.gz", total_labels)
    count = node.GetSegmentation().GetNumberOfSegments()
    liver_id = next(i for i in segmentIds(node) if node.GetSegmentation().GetSegment(i).GetName() == "liver")
    # A segment named differently but carrying the spleen's codes is matched by code.
    spleen = next(s for s in _segments(node) if s.GetName() == "spleen")
    spleen.SetName("Milz")
    spleen.SetTag("TerminologyEntry", to_slicer_string(protocol.structure("spleen").terminology))

    first = ps.applyProtocol(node, protocol)
    assert first.matched["liver"] == "name" and first.matched["spleen"] == "terminology code"
    # TotalSegmentator's portal_vein_and_splenic_vein through the name map the CLI and the server use too
    assert first.matched["portal_vein"] == "name map"
    assert first.created == ["superior_mesenteric_artery"]  # TotalSegmentator has no such class
    assert "colon" in first.extra
    assert node.GetSegmentation().GetSegment(liver_id).GetName() == "Liver"  # content kept, renamed
    assert node.GetSegmentation().GetNthSegmentID(0) == liver_id  # protocol order

    second = ps.applyProtocol(node, protocol)
    assert second.created == [] and set(second.matched.values()) == {"structure tag"}
    assert node.GetSegmentation().GetNumberOfSegments() == count + 1


def test_required_structure_cannot_be_declared_absent(context, sample_dir):
    protocol = bundled_protocol("abdominal-organs")
    node = newSegmentation(context, loadVolume(context, sample_dir / "example_ct_sm.nii.gz"))
    ps.applyProtocol(node, protocol)
    with pytest.raises(ValueError, match="'Liver' is required by abdominal-organs@1.1.0"):
        ps.declareAbsent(node, protocol, "liver")
