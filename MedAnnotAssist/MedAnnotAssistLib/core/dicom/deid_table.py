"""DICOM PS3.15 Table E.1-1 (Application Level Confidentiality Profile Attributes), loaded from our CSV.

The CSV in ``Resources/DICOM`` is the data; this module reads it, names the edition it came from and answers
"which row governs this tag" (including the standard's (50xx,xxxx) and (60xx,eeee) wildcards). It also holds the
values the actions write: VR dummies (D) and whole-day date shifts (C under Modified Dates).
"""

from __future__ import annotations

import csv
import datetime
import functools
import re
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset

from MedAnnotAssistLib.core.dicom import DicomError

TABLE_PATH = Path(__file__).resolve().parents[3] / "Resources" / "DICOM" / "ps3.15-table-E.1-1.csv"

# the option columns we implement, by the words the user sees
OPTION_COLUMNS = {
    "retain_dates_shifted": "retain_long_modified_dates",
    "retain_patient_characteristics": "retain_patient_characteristics",
    "clean_descriptors": "clean_descriptors",
}
ACTION_CODES = {"X", "Z", "D", "U", "K", "C", "X/Z", "X/D", "X/Z/D", "Z/D", "X/Z/U*"}
_TAG = re.compile(r"^\(([0-9A-Fa-fx]{4}),([0-9A-Fa-fx]{4})\)$")
_EDITION = re.compile(r"DICOM PS3\.15 (\d{4}[a-e])")
_NUMBER_VRS = {"US", "SS", "UL", "SL", "UV", "SV", "FL", "FD", "AT"}
_BYTES_VRS = {"OB", "OW", "OD", "OF", "OL", "OV", "UN"}
_DUMMY_TEXT = "ANONYMIZED"
_DUMMY_BY_VR = {"AS": "000D", "DA": "19000101", "DT": "19000101000000", "TM": "000000", "DS": "0", "IS": "0",
                "UR": "https://example.invalid/"}  # fmt: skip


@dataclass(frozen=True)
class ProfileRow:
    """One attribute of Table E.1-1: its tag as printed, its name and its action in each column."""

    tag: str
    name: str
    basic_profile: str
    options: dict[str, str] = field(default_factory=dict)

    def action(self, enabled_columns: tuple[str, ...] = ()) -> str:
        """The action once the enabled option columns are applied (the first enabled column with a code wins)."""
        for column in enabled_columns:
            if self.options.get(column):
                return self.options[column]
        return self.basic_profile


@dataclass(frozen=True)
class ProfileTable:
    """The whole table: rows by exact tag, plus the wildcard rows for repeating groups and private attributes."""

    edition: str
    rows: tuple[ProfileRow, ...]
    by_tag: dict[int, ProfileRow]
    curve_row: ProfileRow | None  # (50xx,xxxx)
    overlay_rows: dict[int, ProfileRow]  # (60xx,eeee) by element
    private_row: ProfileRow | None  # (gggg,eeee) where gggg is odd

    def row_for(self, tag: int) -> ProfileRow | None:
        """The row that governs ``tag``, or None when the table does not list it (the attribute is kept)."""
        group, element = tag >> 16, tag & 0xFFFF
        if group % 2:
            return self.private_row
        if tag in self.by_tag:
            return self.by_tag[tag]
        if group & 0xFF00 == 0x5000 and self.curve_row is not None:
            return self.curve_row
        if group & 0xFF00 == 0x6000:
            return self.overlay_rows.get(element)
        return None


def _parse_tag(text: str, where: str) -> tuple[int | None, str]:
    """(exact tag or None for a wildcard, kind) where kind is 'exact', 'curve', 'overlay' or 'private'."""
    if text == "(gggg,eeee)":
        return None, "private"
    match = _TAG.match(text)
    if not match:
        raise DicomError(f"{where}: tag {text!r} is not of the form (gggg,eeee)")
    group, element = match.groups()
    if "x" in group.lower():
        if group.lower() == "50xx":
            return None, "curve"
        if group.lower() == "60xx" and "x" not in element.lower():
            return int(element, 16), "overlay"
        raise DicomError(f"{where}: wildcard tag {text!r} is not one the standard uses")
    return int(group + element, 16), "exact"


@functools.lru_cache(maxsize=4)
def load_profile_table(path: Path = TABLE_PATH) -> ProfileTable:
    """Read the CSV once per path; the edition comes from the first comment line naming 'DICOM PS3.15 <edition>'."""
    path = Path(path)
    if not path.is_file():
        raise DicomError(f"{path}: the de-identification table is missing")
    lines = path.read_text(encoding="utf-8").splitlines()
    comments = [line for line in lines if line.startswith("#")]
    edition_match = next((m for m in map(_EDITION.search, comments) if m), None)
    if edition_match is None:
        raise DicomError(f"{path}: no comment line names the source edition ('DICOM PS3.15 <year><letter>')")
    reader = csv.DictReader(line for line in lines if line.strip() and not line.startswith("#"))
    fixed = ("tag", "name", "in_std_comp_iod", "basic_profile")
    option_columns = [c for c in reader.fieldnames or [] if c not in fixed]
    rows, by_tag, overlay_rows = [], {}, {}
    curve_row = private_row = None
    for number, record in enumerate(reader, start=2):
        where = f"{path.name} row {number}"
        action = (record.get("basic_profile") or "").strip()
        if action not in ACTION_CODES:
            raise DicomError(f"{where}: basic profile action {action!r} is not a Table E.1-1 code")
        options = {c: record[c].strip() for c in option_columns if (record.get(c) or "").strip()}
        row = ProfileRow(record["tag"].strip(), record["name"].strip(), action, options)
        tag, kind = _parse_tag(row.tag, where)
        if kind == "exact":
            if tag in by_tag:
                raise DicomError(f"{where}: tag {row.tag} appears twice")
            by_tag[tag] = row
        elif kind == "overlay":
            overlay_rows[tag] = row
        elif kind == "curve":
            curve_row = row
        else:
            private_row = row
        rows.append(row)
    if len(rows) < 300:
        raise DicomError(f"{path}: only {len(rows)} rows; Table E.1-1 has several hundred")
    return ProfileTable(edition_match.group(1), tuple(rows), by_tag, curve_row, overlay_rows, private_row)


# -- the values the actions write ------------------------------------------------------------------------------


def vr_for(tag: int, vr: str) -> str:
    """The element's VR, or the dictionary's where the file said UN (the table's actions need the real VR)."""
    if vr in ("UN", None) or " or " in str(vr):
        try:
            vr = dictionary_VR(tag).split(" or ")[0]
        except KeyError:
            vr = "UN"
    return vr


def dummy_value(vr: str):
    if vr in _DUMMY_BY_VR:
        return _DUMMY_BY_VR[vr]
    if vr in _NUMBER_VRS:
        return 0
    if vr in _BYTES_VRS:
        return b"\0" * 8  # a whole number of words of every binary VR
    return _DUMMY_TEXT


def dummy_code() -> Dataset:
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "ANONYMIZED", "99MEDANNOT", "De-identified"
    return code


_DT = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(.*)$")


def shift_date(text: str, days: int) -> str:
    text = text.strip()
    if "-" in text:  # a date range (query-style): shift each end
        return "-".join(shift_date(part, days) if part else "" for part in text.split("-"))
    digits = text.replace(".", "")  # ACR-NEMA wrote YYYY.MM.DD
    if len(digits) != 8 or not digits.isdigit():
        raise ValueError(f"not a date: {text!r}")
    day = datetime.date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
    return (day + datetime.timedelta(days=days)).strftime("%Y%m%d")


def shift_datetime(text: str, days: int) -> str:
    text = text.strip()
    match = _DT.match(text)
    if not match:
        raise ValueError(f"not a date-time: {text!r}")
    year, month, day, rest = match.groups()
    shifted = shift_date(f"{year}{month or '01'}{day or '01'}", days)
    # keep the original precision: a year-only value stays a year
    return shifted[: 4 + (2 if month else 0) + (2 if day else 0)] + rest
