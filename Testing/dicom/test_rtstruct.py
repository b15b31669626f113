"""RTSTRUCT export and import on the real CT series with TotalSegmentator's labels, checked with dciodvfy."""

from __future__ import annotations

import dataclasses

import numpy as np
import pydicom
import pytest

from MedAnnotAssistLib.core.dicom import DicomError
from MedAnnotAssistLib.core.dicom.contours import contours_to_mask, mask_to_contours
from MedAnnotAssistLib.core.dicom.rtstruct import export_rtstruct, read_rtstruct
from MedAnnotAssistLib.core.dicom.seg import source_references
from MedAnnotAssistLib.core.labelio import Geometry
from MedAnnotAssistLib.core.provenance import REFINED, provenance_tags
from Testing.dicom.dicom_helpers import (
    abdomen_protocol,
    ct_labels,
    ct_series,
    dciodvfy,
    dice,
    hole_and_islands,
    labels_from_masks,
    with_other_series_uid,
)

MIN_VOXELS = 50


@pytest.fixture(scope="module")
def written(sample_dir, tmp_path_factory):
    series, (labels, _) = ct_series(sample_dir), ct_labels(sample_dir)
    engine = {"engine": "TotalSegmentator", "version": "2.4.0"}
    tags = {"liver": provenance_tags(engine, 0.9, REFINED)}
    path = tmp_path_factory.mktemp("rtstruct") / "sample.rtstruct.dcm"
    report = export_rtstruct(series, labels, abdomen_protocol(), path, segment_tags=tags, interpreter="Reader^Anna")
    return path, report


def test_rtstruct_of_the_sample_passes_dciodvfy(written):
    path, _ = written
    errors, warnings = dciodvfy(path)
    assert not errors, "dciodvfy errors:\n" + "\n".join(errors)
    print(f"RTSTRUCT {path.stat().st_size / 1e3:.0f} kB; dciodvfy warnings: {warnings}")


def test_rtstruct_round_trip_dice(sample_dir, written):
    path, report = written
    series, (labels, _) = ct_series(sample_dir), ct_labels(sample_dir)
    notes: list[str] = []
    back = read_rtstruct(path, series, abdomen_protocol(), notes)
    assert notes == [] and back.unmatched == []
    assert set(back.segments) == set(report.structures)
    scores = {s: dice(labels.mask(s), back.mask(s)) for s in report.structures}
    print("RTSTRUCT round trip Dice: " + ", ".join(f"{s} {d:.4f}" for s, d in scores.items()))
    for structure_id, score in scores.items():
        if np.count_nonzero(labels.mask(structure_id)) >= MIN_VOXELS:
            assert score >= 0.97, f"{structure_id}: Dice {score:.4f}"


def test_hole_and_two_islands_round_trip_exactly(sample_dir, tmp_path):
    series = ct_series(sample_dir)
    geometry = Geometry.of(series.image)
    mask = hole_and_islands(tuple(reversed(geometry.size)))
    path = tmp_path / "ring.dcm"
    export_rtstruct(series, labels_from_masks({"liver": mask}, geometry), abdomen_protocol(), path)
    ds = pydicom.dcmread(path)
    contours_on_slice_5 = [
        c for c in ds.ROIContourSequence[0].ContourSequence if float(c.ContourData[2]) == pytest.approx(-794.5)
    ]
    assert len(contours_on_slice_5) == 3  # outer boundary, hole, one island: each its own contour
    back = read_rtstruct(path, series, abdomen_protocol()).mask("liver")
    assert not back[5:9, 130:170, 130:170].any(), "the hole was filled"
    assert np.array_equal(back, mask)


def test_contours_toggle_with_the_even_odd_rule():
    mask = np.zeros((40, 40), bool)
    mask[5:35, 5:35] = True
    mask[10:30, 10:30] = False
    mask[15:25, 15:25] = True  # an island inside the hole
    mask[0, 39] = True  # a single pixel in the corner
    contours = mask_to_contours(mask)
    assert len(contours) == 4
    assert np.array_equal(contours_to_mask(contours, mask.shape), mask)


def test_rtstruct_content(sample_dir, written):
    path, report = written
    protocol, series = abdomen_protocol(), ct_series(sample_dir)
    ds = pydicom.dcmread(path)
    references = source_references(series)
    assert ds.Modality == "RTSTRUCT" and ds.StudyInstanceUID == references.study_uid
    assert ds.PatientWeight == series.datasets[0].PatientWeight  # patient attributes come from the series
    [frame] = ds.ReferencedFrameOfReferenceSequence
    assert frame.FrameOfReferenceUID == series.datasets[0].FrameOfReferenceUID
    [referenced] = frame.RTReferencedStudySequence[0].RTReferencedSeriesSequence
    assert referenced.SeriesInstanceUID == references.series_uid
    uids = [h.SOPInstanceUID for h in references.headers]
    assert [i.ReferencedSOPInstanceUID for i in referenced.ContourImageSequence] == uids
    for roi, contour, observation, structure_id in zip(
        ds.StructureSetROISequence, ds.ROIContourSequence, ds.RTROIObservationsSequence, report.structures, strict=True
    ):
        structure = protocol.structure(structure_id)
        assert roi.ROIName == (structure.tg263 or structure.name)
        assert list(contour.ROIDisplayColor) == [round(c * 255) for c in structure.color_rgb]
        assert observation.RTROIInterpretedType == "ORGAN" and observation.ROIInterpreter == "Reader^Anna"
        assert observation.RTROIIdentificationCodeSequence[0].CodeValue == structure.terminology.type.value
        assert all(c.ContourGeometricType == "CLOSED_PLANAR" for c in contour.ContourSequence)
        assert {c.ContourImageSequence[0].ReferencedSOPInstanceUID for c in contour.ContourSequence} <= set(uids)
        expected = ("SEMIAUTOMATIC", "TotalSegmentator 2.4.0") if structure_id == "liver" else ("MANUAL", None)
        assert (roi.ROIGenerationAlgorithm, roi.get("ROIGenerationDescription")) == expected


def test_roi_name_falls_back_to_the_structure_name_with_a_warning(sample_dir, tmp_path):
    series, (labels, _) = ct_series(sample_dir), ct_labels(sample_dir)
    protocol = abdomen_protocol()
    bare = dataclasses.replace(
        protocol, structures=tuple(dataclasses.replace(s, tg263=None) for s in protocol.structures)
    )
    only_liver = labels_from_masks({"liver": labels.mask("liver")}, labels.geometry)
    report = export_rtstruct(series, only_liver, bare, tmp_path / "named.dcm")
    assert pydicom.dcmread(tmp_path / "named.dcm").StructureSetROISequence[0].ROIName == "Liver"
    assert any("'liver' has no TG-263 name" in w for w in report.warnings)


def test_rois_are_matched_by_code_when_the_name_is_unknown(sample_dir, written, tmp_path):
    path, report = written
    ds = pydicom.dcmread(path)
    for roi in ds.StructureSetROISequence:
        roi.ROIName = f"Site specific {roi.ROINumber}"
    ds.save_as(tmp_path / "renamed.dcm")
    back = read_rtstruct(tmp_path / "renamed.dcm", ct_series(sample_dir), abdomen_protocol())
    assert set(back.segments) == set(report.structures) and back.unmatched == []


def test_rtstruct_of_another_series_is_refused_naming_both(sample_dir, written):
    path, _ = written
    series = ct_series(sample_dir)
    other = with_other_series_uid(series)
    with pytest.raises(DicomError) as caught:
        read_rtstruct(path, other, abdomen_protocol())
    assert source_references(series).series_uid in str(caught.value) and other.series_uid in str(caught.value)


def test_empty_label_set_is_refused(sample_dir, tmp_path):
    series = ct_series(sample_dir)
    geometry = Geometry.of(series.image)
    empty = labels_from_masks({"spleen": np.zeros(tuple(reversed(geometry.size)), bool)}, geometry)
    with pytest.raises(DicomError, match="no protocol structure has any voxels"):
        export_rtstruct(series, empty, abdomen_protocol(), tmp_path / "x.dcm")
