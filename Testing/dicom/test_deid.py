"""De-identification outcomes on every DICOM file pydicom ships and on the real JPEG 2000 CT series.

The table checks read ps3.15-table-E.1-1.csv with the csv module here, not through the code under test.
"""

from __future__ import annotations

import csv
import datetime
import hashlib
import json
import stat
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes

from MedAnnotAssistLib.core.dicom import DicomError
from MedAnnotAssistLib.core.dicom.deid import (
    NEEDS_REVIEW_DIR,
    SAFE_PRIVATE_ATTRIBUTES,
    Deidentifier,
    deidentify_file,
    deidentify_folder,
    new_project_key,
    read_or_create_project_key,
    uploadable_files,
)
from MedAnnotAssistLib.core.jobs import CancelledError
from Testing.conftest import REPO
from Testing.dicom.dicom_helpers import walk_elements

TABLE_CSV = REPO / "MedAnnotAssist" / "Resources" / "DICOM" / "ps3.15-table-E.1-1.csv"
PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"  # the wheel's own files, no download
KEY, OTHER_KEY = "project-key-for-tests", "another-project-key"
DATES_COLUMN = "retain_long_modified_dates"
WELL_KNOWN = "1.2.840.10008."


def _read_table() -> dict[str, dict]:
    with TABLE_CSV.open(encoding="utf-8", newline="") as handle:
        return {row["tag"]: row for row in csv.DictReader(line for line in handle if not line.startswith("#"))}


TABLE = _read_table()


def _row(tag: int) -> dict | None:
    group, element = tag >> 16, tag & 0xFFFF
    if group % 2:
        return TABLE["(gggg,eeee)"]
    exact = TABLE.get(f"({group:04X},{element:04X})")
    if exact or group & 0xFF00 not in (0x5000, 0x6000):
        return exact
    return TABLE["(50xx,xxxx)"] if group & 0xFF00 == 0x5000 else TABLE.get(f"(60xx,{element:04X})")


def _action(row: dict, columns: tuple[str, ...]) -> str:
    return next((row[c] for c in columns if row[c]), row["basic_profile"])


def _protected(code: str) -> bool:
    """X, Z, D, U and their compounds: the original value must not survive."""
    return set(code.replace("/", "").replace("*", "")) <= set("XZDU")


def _norm(value):
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.rstrip(b"\0 ")
    if isinstance(value, list | pydicom.multival.MultiValue):
        return tuple(str(v).strip() for v in value)
    return str(value).strip()


def _read_any(path: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return pydicom.dcmread(path)
        except Exception:
            try:
                return pydicom.dcmread(path, force=True)
            except Exception:
                return None


def _originals(folder: Path) -> dict[int, set]:
    values: dict[int, set] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        ds = _read_any(path)
        try:
            for elem in walk_elements(ds or []):
                if _row(elem.tag) is not None and elem.VR != "SQ":
                    values.setdefault(elem.tag, set()).add(_norm(elem.value))
        except Exception:
            continue  # a file pydicom cannot walk gives no originals; the code under test skips it too
    return values


def _run(tmp_path_factory, source: Path, name: str, **options):
    out = tmp_path_factory.mktemp(name) / "out"
    key = options.pop("key", KEY)
    summary = deidentify_folder(source, out, Deidentifier(key, **options))
    return summary, out, sorted(out.rglob("*.dcm"))


@pytest.fixture(scope="module")
def ct_series(sample_dir) -> Path:
    return sample_dir / "example_ct_dicom"


@pytest.fixture(scope="module")
def runs(tmp_path_factory, ct_series):
    """Every run the checks below look at, done once."""
    return {
        "pydicom dates": _run(tmp_path_factory, PYDICOM_FILES, "pd-dates", retain_dates_shifted=True),
        "pydicom basic": _run(tmp_path_factory, PYDICOM_FILES, "pd-basic"),
        "ct dates": _run(tmp_path_factory, ct_series, "ct-dates", retain_dates_shifted=True),
        "ct dates again": _run(tmp_path_factory, ct_series, "ct-again", retain_dates_shifted=True),
        "ct other key": _run(tmp_path_factory, ct_series, "ct-other", retain_dates_shifted=True, key=OTHER_KEY),
        "ct basic": _run(tmp_path_factory, ct_series, "ct-basic"),
    }


@pytest.mark.parametrize("run", ["pydicom dates", "pydicom basic", "ct dates", "ct basic"])
def test_no_protected_attribute_keeps_its_original_value(runs, run, ct_series):
    summary, out, files = runs[run]
    columns = (DATES_COLUMN,) if summary.date_shift_days is not None else ()
    originals = _originals(PYDICOM_FILES if run.startswith("pydicom") else ct_series)
    assert files
    leaks = []
    for path in files:
        for elem in walk_elements(pydicom.dcmread(path)):
            row = _row(elem.tag)
            if row is None or not _protected(code := _action(row, columns)):
                continue
            if code == "X":  # remove: never present, at any depth
                leaks.append(f"{path.name}: {row['name']} {elem.tag} present")
                continue
            value = _norm(elem.value)
            if elem.VR == "SQ" or value in ("", b"", ()):
                continue  # a sequence's items are checked by their own rows
            if elem.VR == "UI" and all(
                v.startswith(WELL_KNOWN) for v in (value if isinstance(value, tuple) else [value])
            ):
                continue  # the standard's own UIDs (e.g. well-known frames of reference) identify no one
            if value in originals.get(elem.tag, ()):
                leaks.append(f"{path.name}: {row['name']} {elem.tag} kept {value!r}")
    assert leaks == []


def test_every_pydicom_file_is_written_or_reported(runs):
    summary, out, files = runs["pydicom dates"]
    seen = sorted(p for p in PYDICOM_FILES.rglob("*") if p.is_file())
    assert summary.files_seen == len(seen) > 150
    assert summary.files_written + len(summary.skipped) == summary.files_seen
    assert len(files) == summary.files_written
    reasons = {note.file: note.reason for note in summary.skipped}
    assert reasons["README.txt"] == "not a DICOM file"
    assert reasons["test1.json"] == "not a DICOM file"
    assert reasons["MR_truncated.dcm"].startswith("truncated DICOM")
    assert reasons["rtplan_truncated.dcm"].startswith("truncated DICOM")
    assert "DICOMDIR" in reasons["dicomdirtests/DICOMDIR"]
    # the odd ones pydicom keeps on purpose are still de-identified and written
    written_from = {note.file for note in summary.skipped}
    for odd in ("ExplVR_BigEndNoMeta.dcm", "meta_missing_tsyntax.dcm", "nested_priv_SQ.dcm", "UN_sequence.dcm"):
        assert odd not in written_from


def test_truncated_and_foreign_files_are_reported_by_name(tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    whole = Path(pydicom.data.get_testdata_file("CT_small.dcm")).read_bytes()
    (source / "cut.dcm").write_bytes(whole[:5000])
    (source / "meta-only.dcm").write_bytes(whole[:140])
    (source / "notes.txt").write_text("patient list")
    summary = deidentify_folder(source, tmp_path / "out", Deidentifier(KEY))
    reasons = {note.file: note.reason for note in summary.skipped}
    assert reasons["notes.txt"] == "not a DICOM file"
    assert reasons["cut.dcm"].startswith("truncated DICOM")
    assert reasons["meta-only.dcm"].startswith("truncated DICOM")
    assert summary.files_written == 0 and not list((tmp_path / "out").rglob("*.dcm"))
    with pytest.raises(DicomError, match="notes.txt: not a DICOM file"):
        deidentify_file(source / "notes.txt", Deidentifier(KEY))


def test_pixel_data_is_never_altered(runs, ct_series):
    for run, source in (("pydicom basic", PYDICOM_FILES), ("ct dates", ct_series)):
        inputs = {}
        for path in sorted(p for p in source.rglob("*") if p.is_file()):
            ds = _read_any(path)
            if ds is not None and "PixelData" in ds:
                inputs[hashlib.sha256(ds.PixelData).hexdigest()] = path
        for path in runs[run][2]:
            ds = pydicom.dcmread(path)
            if "PixelData" in ds:
                assert hashlib.sha256(ds.PixelData).hexdigest() in inputs, path.name
    originals = {int(pydicom.dcmread(p).InstanceNumber): p for p in ct_series.iterdir()}
    outputs = runs["ct dates"][2]
    assert len(outputs) == len(originals) == 20
    for path in outputs:
        new = pydicom.dcmread(path)
        old = pydicom.dcmread(originals[int(new.InstanceNumber)])
        assert new.file_meta.TransferSyntaxUID == old.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.90"
        assert new.PixelData == old.PixelData
        assert np.array_equal(new.pixel_array, old.pixel_array)


def test_uids_are_remapped_consistently_and_per_project(runs, ct_series):
    originals = [pydicom.dcmread(p) for p in sorted(ct_series.iterdir())]
    old_uids = {e.value for ds in originals for e in walk_elements(ds) if e.VR == "UI" and e.value}
    old_uids |= {str(ds.file_meta.MediaStorageSOPInstanceUID) for ds in originals}
    outputs = [pydicom.dcmread(p) for p in runs["ct dates"][2]]
    for ds, path in zip(outputs, runs["ct dates"][2], strict=True):
        assert path.stem == ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
        assert ds.SOPInstanceUID.startswith("2.25.") and len(ds.SOPInstanceUID) <= 64
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"  # well-known: kept
        for elem in walk_elements(ds):
            instance = elem.VR == "UI" and "Class" not in elem.keyword  # class UIDs name a kind, not an instance
            if instance and elem.value and not str(elem.value).startswith(WELL_KNOWN):
                assert elem.value not in old_uids and str(elem.value).startswith("2.25."), elem
        assert not any(uid in str(path) for uid in old_uids)
    # one original frame of reference -> one new one, in every file
    assert len({ds.FrameOfReferenceUID for ds in originals}) == 1
    assert len({ds.FrameOfReferenceUID for ds in outputs}) == 1
    same = sorted(p.relative_to(runs["ct dates"][1]) for p in runs["ct dates"][2])
    again = sorted(p.relative_to(runs["ct dates again"][1]) for p in runs["ct dates again"][2])
    other = {p.stem for p in runs["ct other key"][2]}
    assert same == again
    assert other.isdisjoint(p.stem for p in runs["ct dates"][2]) and len(other) == 20


def _series_with_references(folder: Path) -> list[str]:
    """Three CT_small instances: the 2nd and 3rd refer to the 1st (directly, and two sequences deep)."""
    folder.mkdir()
    base = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    uids = [f"1.2.826.0.1.3680043.2.1125.77.{n}" for n in (1, 2, 3)]
    for n, uid in enumerate(uids):
        ds = base.copy()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid
        if n:
            ref = pydicom.Dataset()
            ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = ds.SOPClassUID, uids[0]
            ds.ReferencedImageSequence = [ref]
            deep, series = pydicom.Dataset(), pydicom.Dataset()
            deep.ReferencedSOPClassUID, deep.ReferencedSOPInstanceUID = ds.SOPClassUID, uids[0]
            series.SeriesInstanceUID, series.ReferencedInstanceSequence = ds.SeriesInstanceUID, [deep]
            ds.ReferencedSeriesSequence = [series]
        ds.save_as(folder / f"PATIENT_{n}.dcm")
    return uids


def test_references_resolve_to_the_remapped_instances(tmp_path):
    _series_with_references(tmp_path / "in")
    summary = deidentify_folder(tmp_path / "in", tmp_path / "out", Deidentifier(KEY))
    outputs = {ds.SOPInstanceUID: ds for ds in map(pydicom.dcmread, sorted((tmp_path / "out").rglob("*.dcm")))}
    assert summary.files_written == len(outputs) == 3
    first = {uid for uid, ds in outputs.items() if "ReferencedImageSequence" not in ds}
    for ds in outputs.values():
        if "ReferencedImageSequence" in ds:
            assert {ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID} == first
            deep = ds.ReferencedSeriesSequence[0]
            assert deep.SeriesInstanceUID == ds.SeriesInstanceUID
            assert {deep.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID} == first
    assert not any("PATIENT" in str(p) for p in (tmp_path / "out").rglob("*"))


def test_dates_shift_by_one_offset_when_retained(runs, ct_series):
    summary = runs["ct dates"][0]
    days = summary.date_shift_days
    assert -3650 <= days <= -365
    assert runs["ct dates again"][0].date_shift_days == days != runs["ct other key"][0].date_shift_days
    originals = {int(pydicom.dcmread(p).InstanceNumber): pydicom.dcmread(p) for p in ct_series.iterdir()}
    offsets, checked = set(), 0
    for path in runs["ct dates"][2]:
        new = pydicom.dcmread(path)
        old = originals[int(new.InstanceNumber)]
        assert new.LongitudinalTemporalInformationModified == "MODIFIED"
        for elem in old:
            row = _row(elem.tag)
            if not (row and row[DATES_COLUMN] == "C" and elem.value):
                continue
            if elem.VR == "DA":
                before = datetime.datetime.strptime(elem.value, "%Y%m%d")
                offsets.add((datetime.datetime.strptime(new[elem.tag].value, "%Y%m%d") - before).days)
                checked += 1
            elif elem.VR == "DT":
                assert new[elem.tag].value[8:] == elem.value[8:]  # time of day kept
                before = datetime.datetime.strptime(elem.value[:8], "%Y%m%d")
                offsets.add((datetime.datetime.strptime(new[elem.tag].value[:8], "%Y%m%d") - before).days)
            elif elem.VR == "TM":
                assert new[elem.tag].value == elem.value
    assert offsets == {days} and checked >= 5 * 20


def test_dates_are_removed_without_the_option(runs, ct_series):
    old_dates = {
        e.value for p in ct_series.iterdir() for e in walk_elements(pydicom.dcmread(p)) if e.VR in ("DA", "DT")
    }
    for path in runs["ct basic"][2]:
        ds = pydicom.dcmread(path)
        assert ds.LongitudinalTemporalInformationModified == "REMOVED"
        assert ds.StudyDate == "" and ds.StudyTime == ""
        assert ds.AcquisitionDateTime == "19000101000000"  # X/Z/D resolved to a dummy
        assert not [e for e in walk_elements(ds) if e.VR in ("DA", "DT") and e.value and e.value in old_dates]
    assert runs["ct basic"][0].date_shift_days is None


def test_identity_method_and_codes_are_recorded(tmp_path, ct_series):
    first = sorted(ct_series.iterdir())[0]
    deidentifier = Deidentifier(
        KEY, retain_dates_shifted=True, clean_descriptors=True, retain_patient_characteristics=True
    )
    ds, reasons = deidentify_file(first, deidentifier)
    assert reasons == []
    assert ds.PatientIdentityRemoved == "YES"
    assert "2024b" in ds.DeidentificationMethod[0] and "Clean Descriptors" in ds.DeidentificationMethod
    expected = [
        codes.DCM.BasicApplicationConfidentialityProfile,
        codes.DCM.RetainPatientCharacteristicsOption,
        codes.DCM.CleanDescriptorsOption,
        codes.DCM.RetainLongitudinalTemporalInformationModifiedDatesOption,
    ]
    got = {(i.CodeValue, i.CodingSchemeDesignator, i.CodeMeaning) for i in ds.DeidentificationMethodCodeSequence}
    assert got == {(c.value, c.scheme_designator, c.meaning) for c in expected}
    assert {c.value for c in expected} == {"113100", "113105", "113107", "113108"}


def test_pseudonyms_follow_the_patient_and_the_key(tmp_path):
    path = pydicom.data.get_testdata_file("CT_small.dcm")
    original = pydicom.dcmread(path)
    one, _ = deidentify_file(path, Deidentifier(KEY))
    two, _ = deidentify_file(pydicom.data.get_testdata_file("JPEG2000.dcm"), Deidentifier(KEY))
    other, _ = deidentify_file(path, Deidentifier(OTHER_KEY))
    assert one.PatientID.startswith("ANON-") and str(one.PatientName).startswith("ANON^")
    assert one.PatientID != original.PatientID and str(original.PatientName) not in str(one.PatientName)
    same_patient = pydicom.dcmread(pydicom.data.get_testdata_file("JPEG2000.dcm")).PatientID == original.PatientID
    assert (two.PatientID == one.PatientID) == same_patient
    assert other.PatientID != one.PatientID


def test_options_keep_patient_characteristics_and_vetted_descriptors(ct_series):
    first = sorted(ct_series.iterdir())[0]
    basic, _ = deidentify_file(first, Deidentifier(KEY))
    kept, _ = deidentify_file(
        first,
        Deidentifier(
            KEY, clean_descriptors=True, retain_patient_characteristics=True, vetted_descriptors=["ct body 3.0"]
        ),
    )
    assert "PatientWeight" not in basic and "SeriesDescription" not in basic
    assert basic.ProtocolName == "ANONYMIZED"  # X/D resolved to a dummy
    assert kept.PatientWeight == 79 and kept.PregnancyStatus == 1
    assert kept.SeriesDescription == "CT Body 3.0"  # vetted by a person: kept
    assert kept.ProtocolName == "ANONYMIZED"  # not vetted: the basic action (X/D) applies
    assert "InstitutionAddress" not in kept and kept.StationName == "ANONYMIZED"


def test_structured_report_content_is_not_released():
    path = pydicom.data.get_testdata_file("reportsi.dcm")
    assert len(pydicom.dcmread(path).ContentSequence) > 0
    ds, _ = deidentify_file(path, Deidentifier(KEY))
    assert len(ds.ContentSequence) == 0  # its items hold free text (Text Value) that no row of the table removes


def test_private_attributes_are_removed(runs):
    assert SAFE_PRIVATE_ATTRIBUTES == {}  # see docs/deidentification.md for why none are kept
    for run in ("pydicom dates", "ct dates"):
        summary, out, files = runs[run]
        assert summary.counts.private_removed > 0
        for path in files:
            ds = pydicom.dcmread(path)
            assert not [e.tag for e in walk_elements(ds) if e.tag.is_private], path.name
            assert not [t for t in list(ds.file_meta.keys()) if t & 0xFFFF > 0x0013]  # no source AE title


def _instance(folder: Path, name: str, number: int, **attributes) -> None:
    ds = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"1.2.826.0.1.3680043.2.1125.88.{number}"
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    ds.save_as(folder / name)


def test_burned_in_risk_is_flagged_and_kept_apart(tmp_path, runs):
    source = tmp_path / "in"
    source.mkdir()
    _instance(source, "burned.dcm", 1, BurnedInAnnotation="YES")
    _instance(source, "ultrasound.dcm", 2, Modality="US")
    _instance(source, "capture-checked.dcm", 3, Modality="SC", BurnedInAnnotation="NO")
    _instance(source, "ct.dcm", 4)
    summary = deidentify_folder(source, tmp_path / "out", Deidentifier(KEY))
    flagged = {note.file: note.reason for note in summary.flagged}
    assert flagged == {
        "burned.dcm": "BurnedInAnnotation is YES",
        "ultrasound.dcm": "modality US without BurnedInAnnotation NO: ultrasound screens carry patient name and ID",
    }
    assert summary.exit_code == 3 and summary.files_written == 4
    review = sorted((tmp_path / "out" / NEEDS_REVIEW_DIR).rglob("*.dcm"))
    assert len(review) == 2 and len(uploadable_files(tmp_path / "out")) == 2
    assert all(NEEDS_REVIEW_DIR not in p.parts for p in uploadable_files(tmp_path / "out"))
    assert "needs-review" in summary.to_text()
    pydicom_flags = {note.file: note.reason for note in runs["pydicom dates"][0].flagged}
    for ultrasound in ("examples_palette.dcm", "examples_ybr_color.dcm", "ExplVR_BigEnd.dcm"):
        assert pydicom_flags[ultrasound].startswith("modality US")
    assert runs["ct dates"][0].flagged == [] and runs["ct dates"][0].exit_code == 0


def test_summary_prints_as_text_and_json(runs):
    summary = runs["pydicom dates"][0]
    data = json.loads(summary.to_json())
    assert data["files_written"] == summary.files_written and data["table_edition"] == "2024b"
    assert data["counts"]["uids_remapped"] > 0 and data["counts"]["dates_shifted"] > 0
    assert data["date_shift_days"] == summary.date_shift_days
    assert {"file", "reason"} <= set(data["skipped"][0])
    text = summary.to_text()
    assert f"{summary.files_written} of {summary.files_read} DICOM files" in text
    assert "README.txt: not a DICOM file" in text and "UIDs remapped" in text


def test_folder_errors_name_the_folder(tmp_path):
    source, out = tmp_path / "in", tmp_path / "out"
    _series_with_references(source)
    with pytest.raises(DicomError, match="does not exist"):
        deidentify_folder(tmp_path / "missing", out, Deidentifier(KEY))
    with pytest.raises(DicomError, match="outside the input folder"):
        deidentify_folder(source, source / "out", Deidentifier(KEY))
    out.mkdir()
    (out / "old.dcm").write_bytes(b"x")
    with pytest.raises(DicomError, match="not empty"):
        deidentify_folder(source, out, Deidentifier(KEY))
    with pytest.raises(ValueError, match="project key is empty"):
        Deidentifier(" ")


def test_progress_and_cancel_leave_nothing_half_done(tmp_path):
    source = tmp_path / "in"
    _series_with_references(source)
    reports = []
    deidentify_folder(source, tmp_path / "done", Deidentifier(KEY), progress=lambda f, m: reports.append((f, m)))
    assert [f for f, _ in reports] == pytest.approx([1 / 3, 2 / 3, 1.0]) and reports[-1][1] == "3/3 files"
    with pytest.raises(CancelledError):
        deidentify_folder(source, tmp_path / "cancelled", Deidentifier(KEY), cancel=lambda: len(reports) > 4,
                          progress=lambda f, m: reports.append((f, m)))  # fmt: skip
    assert not list((tmp_path / "cancelled").rglob("*.dcm"))


def test_project_key_file(tmp_path):
    path = tmp_path / "project" / "deid.key"
    key = read_or_create_project_key(path)
    assert len(key) == 64 and int(key, 16) >= 0
    assert read_or_create_project_key(path) == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert new_project_key() != new_project_key()


def test_dicognito_changes_nothing_in_the_table_that_we_keep(ct_series):
    """Peer check: every Table E.1-1 attribute dicognito 0.19.0 changes, we change too, except times of day,
    which dicognito shifts by hours and the Modified Dates option keeps (the shift is whole days)."""
    from dicognito.anonymizer import Anonymizer

    files = [sorted(ct_series.iterdir())[0]] + [
        pydicom.data.get_testdata_file(n) for n in ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "rtdose.dcm")
    ]
    only_dicognito, only_ours = set(), set()
    for path in files:
        original, peer = pydicom.dcmread(path), pydicom.dcmread(path)
        Anonymizer(seed="fixed seed").anonymize(peer)
        ours, _ = deidentify_file(path, Deidentifier(KEY, retain_dates_shifted=True))
        for elem in original:
            row = _row(elem.tag)
            if row is None or elem.VR == "SQ" or not elem.value:
                continue
            peer_changed = elem.tag not in peer or peer[elem.tag].value != elem.value
            ours_changed = elem.tag not in ours or ours[elem.tag].value != elem.value
            if peer_changed and not ours_changed:
                only_dicognito.add((elem.keyword, elem.VR, _action(row, (DATES_COLUMN,))))
            if ours_changed and not peer_changed:
                only_ours.add(elem.keyword)
    assert only_dicognito and all(vr == "TM" and code == "C" for _, vr, code in only_dicognito), only_dicognito
    # what the table removes and dicognito leaves: free text, device and protocol details, private attributes
    assert {"ProtocolName", "SeriesDescription", "DeviceSerialNumber", "PatientWeight"} <= only_ours
