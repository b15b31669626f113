"""DICOM SEG export and import on the real CT series with TotalSegmentator's labels, checked with dciodvfy."""

from __future__ import annotations

import time

import highdicom as hd
import numpy as np
import pydicom
import pytest

from MedAnnotAssistLib.core.dicom import DicomError
from MedAnnotAssistLib.core.dicom.seg import (
    export_seg,
    labels_for_series,
    read_seg,
    software_version,
    source_references,
)
from MedAnnotAssistLib.core.labelio import Geometry, ReaderLabels, write_seg_nrrd
from MedAnnotAssistLib.core.provenance import ACCEPTED, REFINED, REJECTED, provenance_tags
from Testing.dicom.dicom_helpers import (
    abdomen_protocol,
    ct_labels,
    ct_series,
    dciodvfy,
    labels_from_masks,
    with_other_series_uid,
    without_codes,
)

EXPECTED = {"liver", "spleen", "pancreas", "stomach", "aorta", "inferior_vena_cava", "portal_vein"}


@pytest.fixture(scope="module")
def written(sample_dir, tmp_path_factory):
    """The SEG of the sample, its export report and how long writing took."""
    series, (labels, tags) = ct_series(sample_dir), ct_labels(sample_dir)
    path = tmp_path_factory.mktemp("seg") / "sample.seg.dcm"
    start = time.perf_counter()
    report = export_seg(series, labels, abdomen_protocol(), path, segment_tags=tags)
    return path, report, time.perf_counter() - start


def test_seg_of_the_sample_passes_dciodvfy(written):
    path, report, seconds = written
    errors, warnings = dciodvfy(path)
    assert not errors, "dciodvfy errors:\n" + "\n".join(errors)
    print(f"SEG {path.stat().st_size / 1e6:.2f} MB written in {seconds:.2f} s; dciodvfy warnings: {warnings}")
    assert seconds < 10  # about 0.5 s on a laptop; a large regression shows here


def test_seg_round_trip_gives_identical_masks(sample_dir, written):
    path, report, _ = written
    series, (labels, _) = ct_series(sample_dir), ct_labels(sample_dir)
    back = read_seg(path, series, abdomen_protocol())
    assert set(report.structures) >= EXPECTED
    assert set(back.segments) == set(report.structures)
    assert back.geometry.differences(Geometry.of(series.image)) == []
    for structure_id in report.structures:
        original, restored = labels.mask(structure_id), back.mask(structure_id)
        assert original.any()
        assert np.array_equal(original, restored), f"{structure_id}: {np.count_nonzero(original != restored)} voxels"


def test_seg_describes_segments_with_the_protocol(sample_dir, written):
    path, report, _ = written
    protocol, series = abdomen_protocol(), ct_series(sample_dir)
    seg = hd.seg.segread(path)
    assert seg.Manufacturer == "MedAnnotAssist" and seg.SoftwareVersions == software_version()
    assert "abdominal-organs" in seg.SeriesDescription
    assert seg.SegmentationType == "BINARY"
    for number, structure_id in zip(seg.get_segment_numbers(), report.structures, strict=True):
        structure = protocol.structure(structure_id)
        item = seg.get_segment_description(number)
        assert item.SegmentLabel == structure.name and item.TrackingID == structure.id
        assert item.SegmentedPropertyCategoryCodeSequence[0].CodeValue == structure.terminology.category.value
        assert item.SegmentedPropertyTypeCodeSequence[0].CodeValue == structure.terminology.type.value
        expected = hd.color.CIELabColor.from_rgb(*(round(c * 255) for c in structure.color_rgb))
        assert list(item.RecommendedDisplayCIELabValue) == list(expected.value)
        assert item.SegmentAlgorithmType == "MANUAL"  # a NIfTI has no provenance tags
    adrenal = seg.get_segment_description(report.structures.index("adrenal_gland_right") + 1)
    modifier = adrenal.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence[0]
    assert modifier.CodeMeaning == "Right"
    # the source series is referenced instance by instance, with the (derived) series UID
    references = source_references(series)
    [referenced] = seg.ReferencedSeriesSequence
    assert referenced.SeriesInstanceUID == references.series_uid
    assert [i.ReferencedSOPInstanceUID for i in referenced.ReferencedInstanceSequence] == [
        h.SOPInstanceUID for h in references.headers
    ]
    # empty frames are omitted: one frame per (structure, slice) with voxels
    labels, _ = ct_labels(sample_dir)
    frames = sum(int(labels.mask(s).any(axis=(1, 2)).sum()) for s in report.structures)
    assert seg.NumberOfFrames == frames
    assert ("superior_mesenteric_artery", "not in the labels") in report.skipped
    assert ("kidney_left", "no voxels") in report.skipped


def test_overlapping_segments_round_trip(sample_dir, tmp_path):
    series, (labels, _) = ct_series(sample_dir), ct_labels(sample_dir)
    liver = labels.mask("liver")
    around = liver | np.roll(liver, 8, axis=2)  # overlaps the liver: a second layer, as Slicer stores it
    layered = ReaderLabels("layers", None, labels.geometry, [liver.astype(np.uint8), around.astype(np.uint8)],
                           {"liver": (0, 1), "gallbladder": (1, 1)})  # fmt: skip
    export_seg(series, layered, abdomen_protocol(), tmp_path / "overlap.dcm")
    back = read_seg(tmp_path / "overlap.dcm", series, abdomen_protocol())
    assert len(back.layers) == 2
    assert np.array_equal(back.mask("liver"), liver) and np.array_equal(back.mask("gallbladder"), around)


def test_label_map_seg_round_trips_and_refuses_overlaps(sample_dir, tmp_path):
    series, (labels, tags) = ct_series(sample_dir), ct_labels(sample_dir)
    report = export_seg(series, labels, abdomen_protocol(), tmp_path / "labelmap.dcm", segment_tags=tags, labelmap=True)
    seg = pydicom.dcmread(tmp_path / "labelmap.dcm")
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.7"  # Label Map Segmentation Storage
    assert seg.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.5"  # RLE lossless
    assert int(seg.NumberOfFrames) <= series.slice_count  # one frame per slice, not one per slice and segment
    back = read_seg(tmp_path / "labelmap.dcm", series, abdomen_protocol())
    assert sorted(back.segments) == sorted(report.structures)
    for structure_id in report.structures:
        assert np.array_equal(back.mask(structure_id), labels.mask(structure_id)), structure_id
    liver = labels.mask("liver")
    apart = np.roll(liver, 300, axis=2) & ~liver  # a second layer that touches nothing: still one label map
    shifted = ReaderLabels("two layers", None, labels.geometry, [liver.astype(np.uint8), apart.astype(np.uint8)],
                           {"liver": (0, 1), "gallbladder": (1, 1)})  # fmt: skip
    export_seg(series, shifted, abdomen_protocol(), tmp_path / "apart.dcm", labelmap=True)
    again = read_seg(tmp_path / "apart.dcm", series, abdomen_protocol())
    assert np.array_equal(again.mask("gallbladder"), apart) and np.array_equal(again.mask("liver"), liver)
    around = liver | np.roll(liver, 8, axis=2)
    overlapping = ReaderLabels("overlap", None, labels.geometry, [liver.astype(np.uint8), around.astype(np.uint8)],
                               {"liver": (0, 1), "gallbladder": (1, 1)})  # fmt: skip
    with pytest.raises(DicomError, match="needs segments that do not overlap: liver and gallbladder share voxels"):
        export_seg(series, overlapping, abdomen_protocol(), tmp_path / "overlap.dcm", labelmap=True)
    assert not (tmp_path / "overlap.dcm").exists()


def test_algorithm_type_follows_ai_provenance(sample_dir, tmp_path):
    series, (labels, _) = ct_series(sample_dir), ct_labels(sample_dir)
    protocol = abdomen_protocol()
    geometry = Geometry.of(series.image)
    chosen = ["liver", "spleen", "pancreas", "stomach", "aorta"]
    layer = np.zeros(labels.layers[0].shape, np.uint8)
    for value, structure_id in enumerate(chosen, start=1):
        layer[labels.mask(structure_id)] = value
    engine = {"engine": "TotalSegmentator", "version": "2.4.0", "parameters": {"task": "total"}}
    tags = {
        "liver": provenance_tags(engine, 0.93, ACCEPTED),
        "spleen": provenance_tags(engine, 0.91),  # suggested
        "pancreas": provenance_tags(engine, 0.7, REFINED),
        "stomach": provenance_tags(engine, 0.4, REJECTED),
    }
    nrrd = write_seg_nrrd(
        tmp_path / "reader.seg.nrrd",
        layer,
        geometry,
        [(v, protocol.structure(s)) for v, s in enumerate(chosen, 1)],
        protocol,
        segment_tags=tags,
    )
    read_labels, read_tags = labels_for_series(nrrd, series, protocol)
    report = export_seg(series, read_labels, protocol, tmp_path / "ai.dcm", segment_tags=read_tags)
    seg = pydicom.dcmread(tmp_path / "ai.dcm", stop_before_pixels=True)
    by_id = {item.TrackingID: item for item in seg.SegmentSequence}
    assert report.structures == chosen
    for structure_id, algorithm in [("liver", "AUTOMATIC"), ("spleen", "AUTOMATIC"), ("pancreas", "SEMIAUTOMATIC")]:
        item = by_id[structure_id]
        assert item.SegmentAlgorithmType == algorithm
        [identification] = item.SegmentationAlgorithmIdentificationSequence
        assert (identification.AlgorithmName, identification.AlgorithmVersion) == ("TotalSegmentator", "2.4.0")
    for structure_id in ("stomach", "aorta"):  # rejected, and no tags at all
        assert by_id[structure_id].SegmentAlgorithmType == "MANUAL"
        assert "SegmentationAlgorithmIdentificationSequence" not in by_id[structure_id]


def test_seg_of_another_series_is_refused_naming_both(sample_dir, written):
    path, _, _ = written
    series = ct_series(sample_dir)
    other = with_other_series_uid(series)
    with pytest.raises(DicomError) as caught:
        read_seg(path, other, abdomen_protocol())
    message = str(caught.value)
    assert source_references(series).series_uid in message and other.series_uid in message
    assert "absent" in message


def test_structure_without_codes_is_named(sample_dir, tmp_path):
    series, (labels, _) = ct_series(sample_dir), ct_labels(sample_dir)
    protocol = without_codes(abdomen_protocol(), "spleen")
    with pytest.raises(DicomError, match=r"\$\.structures\[1\]\.terminology\.category: structure 'spleen'"):
        export_seg(series, labels, protocol, tmp_path / "x.dcm")
    assert not (tmp_path / "x.dcm").exists()


def test_labels_off_the_series_grid_are_refused(sample_dir, tmp_path):
    series, protocol = ct_series(sample_dir), abdomen_protocol()
    # example_seg.nii.gz belongs to another CT (122 x 101 x 30 at 3 mm)
    with pytest.raises(DicomError, match="not on the image's voxel grid"):
        labels_for_series(sample_dir / "example_seg.nii.gz", series, protocol, {5: "liver"})
    labels, _ = ct_labels(sample_dir)
    shifted = Geometry(labels.geometry.size, labels.geometry.spacing, (0.0, 0.0, 0.0), labels.geometry.direction)
    moved = labels_from_masks({"liver": labels.mask("liver")}, shifted)
    with pytest.raises(DicomError, match="not on the grid of series"):
        export_seg(series, moved, protocol, tmp_path / "x.dcm")


def test_empty_label_set_is_refused(sample_dir, tmp_path):
    series = ct_series(sample_dir)
    empty = labels_from_masks(
        {"liver": np.zeros(ct_labels(sample_dir)[0].layers[0].shape, bool)}, Geometry.of(series.image)
    )
    with pytest.raises(DicomError, match="no protocol structure has any voxels.*liver: no voxels"):
        export_seg(series, empty, abdomen_protocol(), tmp_path / "x.dcm")


def test_a_long_protocol_id_makes_a_valid_content_label(sample_dir, tmp_path):
    """ContentLabel (CS, 16 characters) cut from "chest-screening-test" must not end with the underscore
    that stood for a hyphen (highdicom refuses it, and so does the standard)."""
    from Testing.task_case import chest_protocol

    series, (labels, _) = ct_series(sample_dir), ct_labels(sample_dir)
    liver = labels_from_masks({"liver": labels.mask("liver")}, labels.geometry)
    export_seg(series, liver, chest_protocol(), tmp_path / "chest.dcm")
    assert pydicom.dcmread(tmp_path / "chest.dcm").ContentLabel == "CHEST_SCREENING"
