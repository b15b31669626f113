"""The Table E.1-1 data file and its loader: edition, size, wildcards and option columns."""

from __future__ import annotations

import csv

import pytest

from MedAnnotAssistLib.core.dicom import DicomError
from MedAnnotAssistLib.core.dicom.deid_table import TABLE_PATH, load_profile_table


def _csv_rows() -> list[dict]:
    with TABLE_PATH.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(line for line in handle if not line.startswith("#")))


def test_file_names_the_edition_and_every_row_is_loaded():
    first = TABLE_PATH.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# DICOM PS3.15 2024b, Table E.1-1")
    table = load_profile_table()
    rows = _csv_rows()
    assert table.edition == "2024b"
    assert len(table.rows) == len(rows) == 621
    assert {row["basic_profile"] for row in rows} == {"X", "Z", "D", "U", "X/Z", "X/D", "X/Z/D", "Z/D", "X/Z/U*"}


@pytest.mark.parametrize(
    "tag, name, basic",
    [
        (0x00100010, "Patient's Name", "Z"),
        (0x00100020, "Patient ID", "Z/D"),
        (0x00080050, "Accession Number", "Z"),
        (0x0020000D, "Study Instance UID", "U"),
        (0x00081155, "Referenced SOP Instance UID", "U"),
        (0x00081140, "Referenced Image Sequence", "X/Z/U*"),
        (0x00080081, "Institution Address", "X"),
        (0x50020000, "Curve Data", "X"),  # (50xx,xxxx)
        (0x60023000, "Overlay Data", "X"),  # (60xx,3000)
        (0x00291010, "Private Attributes", "X"),  # odd group
    ],
)
def test_rows_for_tags_including_wildcards(tag, name, basic):
    row = load_profile_table().row_for(tag)
    assert (row.name, row.basic_profile) == (name, basic)


def test_unlisted_tags_have_no_row():
    table = load_profile_table()
    assert table.row_for(0x00280010) is None  # Rows
    assert table.row_for(0x7FE00010) is None  # Pixel Data
    assert table.row_for(0x60020010) is None  # Overlay Rows: only 3000 and 4000 are listed


def test_option_columns_change_the_action():
    table = load_profile_table()
    study_date = table.row_for(0x00080020)
    assert study_date.action() == "Z"
    assert study_date.action(("retain_long_modified_dates",)) == "C"
    assert table.row_for(0x00101010).action(("retain_patient_characteristics",)) == "K"  # Patient's Age
    assert table.row_for(0x0008103E).action(("clean_descriptors",)) == "C"  # Series Description


def test_a_table_without_edition_is_refused(tmp_path):
    bad = tmp_path / "table.csv"
    bad.write_text("tag,name,in_std_comp_iod,basic_profile\n" + "(0010,0010),Patient's Name,Y,Z\n" * 400)
    with pytest.raises(DicomError, match="edition"):
        load_profile_table(bad)
