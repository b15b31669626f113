"""No identifier survives de-identification: a crafted file with identifiers planted everywhere, the real
CT series with its institution-local coding schemes, and the safe list that decides what the table does not."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest

from MedAnnotAssistLib.core.dicom.deid import Deidentifier, deidentify_file, deidentify_folder
from MedAnnotAssistLib.core.dicom.deid_safe import REGISTERED_CODING_SCHEMES, SAFE_UNLISTED, is_local_code
from MedAnnotAssistLib.core.dicom.deid_table import load_profile_table
from MedAnnotAssistLib.core.dicom.rtstruct import export_rtstruct, read_rtstruct
from MedAnnotAssistLib.core.dicom.seg import export_seg, labels_for_series, read_seg
from MedAnnotAssistLib.core.dicom.series import read_series
from Testing.conftest import REPO
from Testing.dicom.deid_crafted import survivors, write_crafted
from Testing.dicom.dicom_helpers import abdomen_protocol, dciodvfy, walk_elements
from Testing.readers import ABDOMEN_LABELS

KEY = "project-key-for-leak-tests"
OPTIONS = {
    "basic": {},
    "all options": {"retain_dates_shifted": True, "clean_descriptors": True, "retain_patient_characteristics": True},
}
pytestmark = pytest.mark.filterwarnings("ignore:VR lookup failed")  # the UN item's unknown tag, on purpose
LOCAL_SCHEMES = (b"USB.PROCEDURES", b"SECTRA", b"99CT_VIA")  # the sample's own: they name the hospital


@pytest.fixture(scope="module")
def crafted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("crafted") / "in"
    folder.mkdir()
    planted = write_crafted(folder / "crafted.dcm")
    return folder, planted


@pytest.mark.parametrize("options", OPTIONS)
def test_no_planted_identifier_survives(crafted, tmp_path, options):
    folder, planted = crafted
    assert len(planted) >= 60
    assert sorted(survivors(folder / "crafted.dcm", planted)) == sorted(planted)  # the search finds them all
    summary = deidentify_folder(folder, tmp_path / "out", Deidentifier(KEY, **OPTIONS[options]))
    written = list((tmp_path / "out").rglob("*.dcm"))
    assert summary.files_written == len(written) == 1, summary.to_text()
    assert survivors(written[0], planted) == []
    ds = pydicom.dcmread(written[0])
    assert ds.pixel_array.shape == (128, 128) and ds.PatientIdentityRemoved == "YES"
    assert ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID.startswith("2.25.")  # references still resolve
    assert summary.counts.unlisted_removed >= 10  # non-dictionary, overlay, code sequences the table does not list
    if options == "all options":  # Clean Descriptors keeps coded sequences: their local codes go one by one
        assert summary.counts.local_codes_removed >= 3


def test_dicognito_leaks_what_we_remove(crafted, tmp_path):
    """The peer on the same file: the crafted file tells a leaking de-identifier from ours."""
    from dicognito.anonymizer import Anonymizer

    folder, planted = crafted
    ds = pydicom.dcmread(folder / "crafted.dcm")
    Anonymizer(seed="fixed seed").anonymize(ds)
    ds.save_as(tmp_path / "dicognito.dcm")
    leaked = survivors(tmp_path / "dicognito.dcm", planted)
    print(f"dicognito 0.19.0 leaks {len(leaked)} of {len(planted)}: {leaked}")
    for label in ("non-dictionary (0008,7777)", "private value", "OverlayData bytes", "local scheme", "preamble"):
        assert label in leaked


def test_coded_items_of_local_or_private_schemes_are_dropped(crafted):
    folder, _ = crafted
    ds, _ = deidentify_file(folder / "crafted.dcm", Deidentifier(KEY, clean_descriptors=True))
    # Clean Descriptors keeps the admitting diagnoses (C): only the code of a registered scheme is left
    assert [(c.CodeValue, c.CodingSchemeDesignator) for c in ds.AdmittingDiagnosesCodeSequence] == [("C34.1", "I10")]
    request = ds.RequestAttributesSequence[0]  # C: kept, items cleaned
    assert "RequestedProcedureCodeSequence" not in request  # not in the table, not on the safe list
    assert len(request.ReasonForRequestedProcedureCodeSequence) == 0  # its only code was of the local scheme L
    for name in ("RequestedProcedureCodeSequence", "ProcedureCodeSequence", "PerformedProtocolCodeSequence"):
        assert name not in ds


@pytest.mark.parametrize(
    "scheme, local",
    [("DCM", False), ("SCT", False), ("I10", False), ("NCIt", False), ("USB.PROCEDURES", True), ("SECTRA", True),
     ("99CT_VIA", True), ("99USB", True), ("L", True), ("", True), ("sct", True)],
)  # fmt: skip
def test_local_and_private_schemes_are_recognised(scheme, local):
    code = pydicom.Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "1", scheme, "meaning"
    assert is_local_code(code) is local
    urn = pydicom.Dataset()
    urn.URNCodeValue, urn.CodeMeaning = "http://pacs.hospital.example/codes/7", "meaning"
    assert is_local_code(urn) and not is_local_code(pydicom.Dataset())


def test_registered_schemes_include_every_scheme_of_the_standards_code_tables():
    from pydicom.sr import _concepts_dict

    assert set(_concepts_dict.concepts) <= REGISTERED_CODING_SCHEMES
    assert not [s for s in REGISTERED_CODING_SCHEMES if s.startswith("99") or s == "L"]


def test_safe_list_is_short_public_outside_the_table_and_documented():
    table = load_profile_table()
    assert 0 < len(SAFE_UNLISTED) <= 100
    text_vrs = {"PN", "LO", "LT", "SH", "ST", "UT", "UC", "UR", "AE", "DA", "DT", "TM"}
    docs = (REPO / "docs" / "deidentification.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"`([A-Za-z0-9]+)`", docs.split("## The safe list", 1)[1].split("\n## ", 1)[0]))
    for keyword, entry in SAFE_UNLISTED.items():
        tag = pydicom.datadict.tag_for_keyword(keyword)
        assert tag is not None and not (tag >> 16) % 2, keyword  # a public attribute of the dictionary
        assert table.row_for(tag) is None, keyword  # the table governs what it lists
        vr = pydicom.datadict.dictionary_VR(tag)
        # free text may name someone: kept only inside a code of a registered scheme, otherwise emptied
        assert vr not in text_vrs or entry.action == "Z" or entry.group == "codes", keyword
        assert keyword in documented, f"{keyword} is not in docs/deidentification.md's safe list"
        assert entry.why
    assert documented - set(SAFE_UNLISTED) <= {"Z", "K"}


@pytest.fixture(scope="module")
def sample_out(sample_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("sample") / "out"
    summary = deidentify_folder(sample_dir / "example_ct_dicom", out, Deidentifier(KEY, retain_dates_shifted=True))
    assert summary.files_written == 20, summary.to_text()
    return out


def test_sample_keeps_no_local_or_private_coding_scheme(sample_dir, sample_out):
    originals = [p.read_bytes() for p in (sample_dir / "example_ct_dicom").iterdir()]
    assert all(all(scheme in raw for scheme in LOCAL_SCHEMES) for raw in originals)  # all 20 carry them
    files = sorted(sample_out.rglob("*.dcm"))
    assert len(files) == 20
    for path in files:
        raw = path.read_bytes()
        assert not [scheme for scheme in LOCAL_SCHEMES if scheme in raw], path.name
        schemes = {str(e.value) for e in walk_elements(pydicom.dcmread(path)) if e.keyword == "CodingSchemeDesignator"}
        assert schemes and schemes <= REGISTERED_CODING_SCHEMES, (path.name, schemes)


def test_sample_still_imports_with_its_geometry_and_pixels(sample_dir, sample_out):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        before, after = read_series(sample_dir / "example_ct_dicom"), read_series(sample_out)
    assert after.slice_count == before.slice_count == 20 and after.modality == "CT"
    assert after.image.GetSize() == before.image.GetSize()
    assert after.image.GetSpacing() == pytest.approx(before.image.GetSpacing())
    assert after.image.GetOrigin() == pytest.approx(before.image.GetOrigin())
    assert after.image.GetDirection() == pytest.approx(before.image.GetDirection())
    import SimpleITK as sitk

    assert np.array_equal(sitk.GetArrayFromImage(after.image), sitk.GetArrayFromImage(before.image))


def test_the_ct_iod_loses_nothing_it_needs(sample_dir, sample_out):
    """dciodvfy on a de-identified slice: every missing or empty attribute it reports was so in the input."""
    path = sorted(sample_out.rglob("*.dcm"))[0]
    number = pydicom.dcmread(path).InstanceNumber
    inputs = map(pydicom.dcmread, (sample_dir / "example_ct_dicom").iterdir())
    old = next(ds for ds in inputs if ds.InstanceNumber == number)
    errors, _ = dciodvfy(path)
    for error in errors:
        found = re.search(r"Element=<(\w+)>", error)
        assert found, error
        keyword = found.group(1)
        if "Missing attribute" in error:
            assert keyword not in old, error
        elif "Empty attribute" in error:
            assert not old.get(keyword), error
        else:
            pytest.fail(error)


def test_seg_and_rtstruct_of_the_deidentified_sample_pass_dciodvfy_and_round_trip(sample_dir, sample_out, tmp_path):
    series = read_series(sample_out)
    protocol = abdomen_protocol()
    labels, tags = labels_for_series(sample_dir / "example_seg_dicom.nii.gz", series, protocol, ABDOMEN_LABELS)
    seg = export_seg(series, labels, abdomen_protocol(), tmp_path / "seg.dcm", segment_tags=tags)
    rtstruct = export_rtstruct(series, labels, abdomen_protocol(), tmp_path / "rtstruct.dcm", segment_tags=tags)
    for report in (seg, rtstruct):
        errors, _ = dciodvfy(report.path)
        assert errors == [], f"{report.path.name}: " + "\n".join(errors)
    assert len(seg.structures) >= 7
    back = read_seg(seg.path, series, abdomen_protocol())
    for structure_id in seg.structures:
        assert np.array_equal(back.mask(structure_id), labels.mask(structure_id)), structure_id
    notes: list[str] = []
    contours = read_rtstruct(rtstruct.path, series, abdomen_protocol(), notes)
    assert notes == [] and set(contours.segments) == set(rtstruct.structures)


def test_every_pydicom_image_decodes_to_the_same_pixels_after(tmp_path):
    """The safe list keeps what decoding needs: palettes, YBR, planar configuration, frames, big endian, ..."""
    deidentifier, checked = Deidentifier(KEY, retain_dates_shifted=True), 0
    for path in sorted(p for p in (Path(pydicom.__file__).parent / "data" / "test_files").rglob("*") if p.is_file()):
        try:
            before = pydicom.dcmread(path).pixel_array
        except Exception:
            continue  # no pixel data, not DICOM, or a codec pydicom lacks here
        after = deidentify_file(path, deidentifier)[0].pixel_array
        assert np.array_equal(before, after), path.name
        checked += 1
    assert checked >= 80
