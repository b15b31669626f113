"""DICOM de-identification: PS3.15 Annex E Basic Application Level Confidentiality Profile, table-driven.

Options: Retain Longitudinal Temporal Information with Modified Dates (a per-project date shift), Clean Descriptors
and Retain Patient Characteristics. Every replacement value (UIDs, pseudonyms, the date shift) is derived from a
secret project key with HMAC-SHA-256, so the same input gives the same output in every file and every run of a
project. Attributes the table does not list are removed unless they are on the safe list (``deid_safe``), and
coded items of local or private schemes are dropped. Pixel data is never touched; files at risk of burned-in text
go to ``needs-review/`` under OUT. See docs/deidentification.md.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import time
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pydicom
from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from MedAnnotAssistLib.core.dicom import DicomError
from MedAnnotAssistLib.core.dicom.deid_read import read_for_deid
from MedAnnotAssistLib.core.dicom.deid_safe import SAFE_UNLISTED_TAGS, is_local_code
from MedAnnotAssistLib.core.dicom.deid_table import (
    OPTION_COLUMNS,
    ProfileRow,
    ProfileTable,
    dummy_code,
    dummy_value,
    load_profile_table,
    shift_date,
    shift_datetime,
    vr_for,
)
from MedAnnotAssistLib.core.jobs import CancelCallback, ProgressCallback, check_cancel

NEEDS_REVIEW_DIR = "needs-review"
DATE_SHIFT_RANGE_DAYS = (-3650, -365)  # always into the past, by one to ten years
WELL_KNOWN_UID_ROOT = "1.2.840.10008."  # the standard's own UIDs (SOP classes, transfer syntaxes, ...)
# modalities that commonly carry burned-in names or IDs in the pixels, or show the patient
BURNED_IN_RISK_MODALITIES = {
    "US": "ultrasound screens carry patient name and ID",
    "IVUS": "intravascular ultrasound screens carry patient text",
    "SC": "secondary captures are screenshots",
    "OT": "'other' images are often screenshots or scanned documents",
    "XC": "external-camera photographs can show faces and labels",
    "ES": "endoscopy video frames carry on-screen patient text",
    "GM": "general microscopy images can show slide labels",
    "SM": "slide microscopy includes the slide label image",
    "OP": "ophthalmic photographs carry on-screen text",
    "DOC": "scanned documents are text",
    "XA": "angiography frames often carry on-screen text",
    "RF": "fluoroscopy frames often carry on-screen text",
}
SECONDARY_CAPTURE_ROOT = "1.2.840.10008.5.1.4.1.1.7"
ENCAPSULATED_DOCUMENT_ROOT = "1.2.840.10008.5.1.4.1.1.104."
# (private creator, element low byte) -> why it is safe to keep; empty: see docs/deidentification.md
SAFE_PRIVATE_ATTRIBUTES: dict[tuple[str, int], str] = {}
# CID 7050 (PS3.16) codes we record, checked against pydicom's codes.DCM
METHOD_CODES = {
    "basic": ("113100", "Basic Application Confidentiality Profile"),
    "clean_descriptors": ("113105", "Clean Descriptors Option"),
    "retain_dates_shifted": ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    "retain_patient_characteristics": ("113108", "Retain Patient Characteristics Option"),
}
OPTION_WORDS = {
    "retain_dates_shifted": "Retain Longitudinal Modified Dates",
    "clean_descriptors": "Clean Descriptors",
    "retain_patient_characteristics": "Retain Patient Characteristics",
}
# UI attributes that name a kind of thing (class, syntax, scheme, creator), not an instance: never remapped
_TYPE_UID_WORDS = ("Class", "TransferSyntax", "Creator", "CodingScheme", "MappingResource", "Template", "Repository")
_TYPE_UID_KEYWORDS = {"ContextUID", "HomeCommunityID", "RetrieveLocationUID", "SOPClassesInStudy"}
_TEXT_VRS = {"LO", "LT", "SH", "ST", "UC", "UT", "PN"}
_COMPOUND = {"X/Z": "Z", "X/D": "D", "X/Z/D": "D", "Z/D": "D"}
_TYPE2_SEQUENCES = {0x00400555}  # Acquisition Context: the one X/Z sequence that is Type 2 (PS3.3 C.7.6.14)
_PATIENT_TAGS = (0x00100010, 0x00100020)  # PatientName, PatientID: pseudonyms


@dataclass
class ActionCounts:
    """How many attributes each kind of action touched, over all files."""

    removed: int = 0
    emptied: int = 0
    dummied: int = 0
    cleaned: int = 0
    uids_remapped: int = 0
    dates_shifted: int = 0
    private_removed: int = 0
    pseudonymized: int = 0
    unlisted_removed: int = 0  # neither in the table nor on the safe list
    local_codes_removed: int = 0  # coded items of a local or private scheme

    def add(self, other: ActionCounts) -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)


@dataclass
class FileNote:
    """An input file (path relative to IN) and why it was skipped or flagged."""

    file: str
    reason: str


@dataclass
class DeidSummary:
    """What a folder run did. Input names are the operator's own and may hold identifiers: never upload this."""

    in_dir: str
    out_dir: str
    table_edition: str
    options: list[str]
    date_shift_days: int | None
    files_seen: int = 0
    files_read: int = 0
    files_written: int = 0
    skipped: list[FileNote] = field(default_factory=list)
    flagged: list[FileNote] = field(default_factory=list)
    duplicates: list[FileNote] = field(default_factory=list)
    counts: ActionCounts = field(default_factory=ActionCounts)
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        """0 when every DICOM file was written to OUT, 3 when any file was flagged for review."""
        return 3 if self.flagged else 0

    def to_dict(self) -> dict:
        return asdict(self) | {"needs_review_dir": str(Path(self.out_dir) / NEEDS_REVIEW_DIR)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_text(self) -> str:
        options = ", ".join(self.options) or "none"
        shift = f" (by {self.date_shift_days} days)" if self.date_shift_days is not None else ""
        c = self.counts
        lines = [
            f"De-identified {self.files_written} of {self.files_read} DICOM files read ({self.files_seen} files seen) "
            f"in {self.seconds:.1f} s: DICOM PS3.15 {self.table_edition} Basic Profile, options: {options}",
            f"Written to {self.out_dir}; {len(self.skipped)} skipped, {len(self.flagged)} flagged for review",
            f"Actions: {c.removed} removed, {c.emptied} emptied, {c.dummied} dummy values, {c.cleaned} cleaned, "
            f"{c.uids_remapped} UIDs remapped, {c.dates_shifted} dates shifted{shift}, "
            f"{c.private_removed} private removed, {c.pseudonymized} pseudonyms, {c.unlisted_removed} removed as "
            f"neither in the table nor on the safe list, {c.local_codes_removed} codes of local schemes removed",
        ]
        if self.flagged:
            lines.append(f"Flagged (written to {Path(self.out_dir) / NEEDS_REVIEW_DIR}; review before any upload):")
            lines += [f"  {note.file}: {note.reason}" for note in self.flagged]
        if self.duplicates:
            lines.append("Duplicate SOP Instance UIDs:")
            lines += [f"  {note.file}: {note.reason}" for note in self.duplicates]
        if self.skipped:
            lines.append("Skipped:")
            lines += [f"  {note.file}: {note.reason}" for note in self.skipped]
        return "\n".join(lines)


def new_project_key() -> str:
    """A fresh random project key (256 bits, hex). Keep it secret and keep it for the life of the project."""
    return secrets.token_hex(32)


def read_or_create_project_key(path: str | Path) -> str:
    """The project key stored in ``path``; a new random key is written there (owner-only) when the file is absent."""
    path = Path(path)
    if path.is_file():
        key = path.read_text(encoding="utf-8").strip()
        if not key:
            raise DicomError(f"{path}: the project key file is empty")
        return key
    path.parent.mkdir(parents=True, exist_ok=True)
    key = new_project_key()
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(key + "\n")
    return key


def uploadable_files(out_dir: str | Path) -> list[Path]:
    """The de-identified files under OUT that may be uploaded: everything except the needs-review folder."""
    out_dir = Path(out_dir)
    return sorted(p for p in out_dir.rglob("*.dcm") if NEEDS_REVIEW_DIR not in p.relative_to(out_dir).parts)


class Deidentifier:
    """Applies Table E.1-1 with the chosen options to pydicom datasets, deterministically per project key."""

    def __init__(
        self,
        project_key: str,
        *,
        retain_dates_shifted: bool = False,
        clean_descriptors: bool = False,
        retain_patient_characteristics: bool = False,
        vetted_descriptors: Iterable[str] = (),
        table: ProfileTable | None = None,
    ):
        if not project_key or not str(project_key).strip():
            raise ValueError("the project key is empty; use new_project_key() once per project and keep it")
        self._key = str(project_key).strip().encode("utf-8")
        self.table = table or load_profile_table()
        self.options = {
            "retain_dates_shifted": retain_dates_shifted,
            "clean_descriptors": clean_descriptors,
            "retain_patient_characteristics": retain_patient_characteristics,
        }
        # patient characteristics before descriptors: both say C for Allergies and Patient State
        order = ("retain_patient_characteristics", "clean_descriptors", "retain_dates_shifted")
        self._columns = tuple(OPTION_COLUMNS[name] for name in order if self.options[name])
        # descriptors a person has checked free of identifiers: Clean Descriptors keeps exactly these
        self.vetted_descriptors = {text.strip().upper() for text in vetted_descriptors if text.strip()}
        low, high = DATE_SHIFT_RANGE_DAYS
        self.date_shift_days = low + self._number("date-shift", "", high - low + 1) if retain_dates_shifted else None

    # -- derivations from the project key ------------------------------------------------------------------

    def _digest(self, purpose: str, value: str) -> bytes:
        return hmac.new(self._key, f"{purpose}\0{value}".encode(), hashlib.sha256).digest()

    def _number(self, purpose: str, value: str, modulo: int) -> int:
        return int.from_bytes(self._digest(purpose, value)[:8], "big") % modulo

    def new_uid(self, uid: str) -> str:
        """The project's replacement for an instance UID: '2.25.' + 128 bits of HMAC; well-known UIDs unchanged."""
        uid = str(uid).strip().rstrip("\0").strip()
        if not uid or uid.startswith(WELL_KNOWN_UID_ROOT):
            return uid
        return "2.25." + str(int.from_bytes(self._digest("uid", uid)[:16], "big"))

    def pseudonym(self, patient_basis: str) -> tuple[str, str]:
        """(PatientID, PatientName) standing for one patient of the project; never the original."""
        code = self._digest("patient", patient_basis.strip()).hex()[:12].upper()
        return f"ANON-{code}", f"ANON^{code}"

    def method_options(self) -> list[str]:
        return [OPTION_WORDS[name] for name, on in self.options.items() if on]

    # -- burned-in text --------------------------------------------------------------------------------------

    @staticmethod
    def review_reasons(ds: Dataset) -> list[str]:
        """Why a person must look at the pixels before the file leaves the site (empty: no known risk)."""
        burned = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()
        modality = str(ds.get("Modality", "") or "").strip().upper()
        sop_class = str(ds.get("SOPClassUID", "") or "")
        reasons = []
        if burned == "YES":
            reasons.append("BurnedInAnnotation is YES")
        elif burned != "NO" and modality in BURNED_IN_RISK_MODALITIES:
            reasons.append(f"modality {modality} without BurnedInAnnotation NO: {BURNED_IN_RISK_MODALITIES[modality]}")
        elif burned != "NO" and sop_class.startswith(SECONDARY_CAPTURE_ROOT):
            reasons.append("secondary capture without BurnedInAnnotation NO: screenshots may show identifiers")
        if sop_class.startswith(ENCAPSULATED_DOCUMENT_ROOT):
            reasons.append("encapsulated document: its content cannot be de-identified by attribute rules")
        if str(ds.get("RecognizableVisualFeatures", "") or "").strip().upper() == "YES":
            reasons.append("RecognizableVisualFeatures is YES: the image may show the patient's face")
        return reasons

    # -- the data set ------------------------------------------------------------------------------------------

    def deidentify_dataset(self, ds: Dataset, counts: ActionCounts | None = None) -> ActionCounts:
        """De-identify ``ds`` in place (file meta included) and record what was done; pixel data is untouched."""
        counts = counts if counts is not None else ActionCounts()
        basis = str(ds.get("PatientID", "") or "").strip()
        if not basis:  # no ID: the name and birth date stand for the patient
            basis = f"name:{ds.get('PatientName', '')}|{ds.get('PatientBirthDate', '')}"
        self._clean_dataset(ds, counts, basis)
        self._clean_file_meta(ds, counts)
        ds.PatientIdentityRemoved = "YES"
        method = [f"PS3.15 {self.table.edition} Table E.1-1 Basic Profile", *self.method_options()]
        ds.DeidentificationMethod = [text[:64] for text in method] if len(method) > 1 else method[0][:64]
        items = []
        for name in ("basic", *[n for n, on in self.options.items() if on]):
            item = Dataset()
            item.CodeValue, item.CodingSchemeDesignator = METHOD_CODES[name][0], "DCM"
            item.CodeMeaning = METHOD_CODES[name][1]
            items.append(item)
        ds.DeidentificationMethodCodeSequence = Sequence(items)
        ds.LongitudinalTemporalInformationModified = "MODIFIED" if self.date_shift_days is not None else "REMOVED"
        return counts

    def _clean_file_meta(self, ds: Dataset, counts: ActionCounts) -> None:
        old = getattr(ds, "file_meta", None) or FileMetaDataset()
        meta = FileMetaDataset()
        # an instance whose SOP UIDs were blanked gets them back from its file meta, so it stays a valid instance
        sop_class = str(ds.get("SOPClassUID", "") or "") or str(old.get("MediaStorageSOPClassUID", "") or "")
        if sop_class:
            meta.MediaStorageSOPClassUID = ds.SOPClassUID = sop_class
        instance = str(ds.get("SOPInstanceUID", "") or "")
        if not instance and old.get("MediaStorageSOPInstanceUID"):
            instance = self.new_uid(old.MediaStorageSOPInstanceUID)
            ds.SOPInstanceUID = instance
            counts.uids_remapped += 1
        if instance:
            meta.MediaStorageSOPInstanceUID = instance
        implicit, little = getattr(ds, "original_encoding", (None, None))
        default = {(True, True): ImplicitVRLittleEndian, (False, False): ExplicitVRBigEndian}
        meta.TransferSyntaxUID = old.get("TransferSyntaxUID") or default.get((implicit, little), ExplicitVRLittleEndian)
        ds.file_meta = meta  # the source AE title and private meta elements are dropped with the old meta
        if getattr(ds, "preamble", None):
            ds.preamble = b"\0" * 128  # 128 free bytes before DICM: some writers put text there

    def _clean_dataset(self, ds: Dataset, counts: ActionCounts, basis: str) -> None:
        patient_id = str(ds.get("PatientID", "") or "").strip()
        basis = patient_id or basis  # a nested item naming another patient gets that patient's pseudonym
        self._drop_private(ds, counts)
        for tag in list(ds.keys()):
            if tag not in ds:
                continue
            if tag & 0xFFFF == 0 and tag >> 16 != 0x0002:
                del ds[tag]  # group lengths would be wrong after the changes
            elif tag >> 16 & 1:
                continue  # private: _drop_private decided
            elif tag in _PATIENT_TAGS:
                new_id, new_name = self.pseudonym(basis)
                ds[tag].value = new_id if tag == 0x00100020 else new_name
                counts.pseudonymized += 1
            elif (row := self.table.row_for(tag)) is not None:
                self._apply(ds, tag, row, row.action(self._columns), counts, basis)
            elif tag in SAFE_UNLISTED_TAGS:
                self._keep_safe(ds, tag, SAFE_UNLISTED_TAGS[tag].action, counts, basis)
            else:  # the table does not know it: nothing says it cannot hold a name (e.g. (0010,0018))
                del ds[tag]
                counts.unlisted_removed += 1

    def _drop_private(self, ds: Dataset, counts: ActionCounts) -> None:
        keep, tags = set(), list(ds.keys())
        for tag in tags:
            if tag >> 16 & 1 and tag & 0xFFFF >= 0x1000:
                creator = ds.get((tag >> 16, (tag & 0xFFFF) >> 8))
                if creator is not None and (str(creator.value).strip(), tag & 0xFF) in SAFE_PRIVATE_ATTRIBUTES:
                    keep |= {tag, creator.tag}
        for tag in [t for t in tags if t >> 16 & 1 and t not in keep]:
            del ds[tag]
            counts.private_removed += 1

    def _recurse(self, ds: Dataset, tag: int, counts: ActionCounts, basis: str) -> None:
        items = ds[tag].value
        if not isinstance(items, Sequence):  # a UN value pydicom could not parse as items: unseen, so not kept
            del ds[tag]
            counts.removed += 1
            return
        kept = [item for item in items if not is_local_code(item)]  # an institution's own code names it
        counts.local_codes_removed += len(items) - len(kept)
        for item in kept:
            self._clean_dataset(item, counts, basis)
        if len(kept) < len(items):
            ds[tag].value = Sequence(kept)

    def _keep_safe(self, ds: Dataset, tag: int, action: str, counts: ActionCounts, basis: str) -> None:
        """An attribute of the safe list: kept (sequence items cleaned, instance UIDs remapped) or emptied."""
        elem = ds[tag]
        if action == "Z":
            elem.value = Sequence() if elem.VR == "SQ" else None
            counts.emptied += 1
        elif elem.VR == "SQ":
            self._recurse(ds, tag, counts, basis)
        elif elem.VR == "UI" and _is_instance_uid(tag):
            self._remap_uids(elem, counts)

    def _apply(self, ds: Dataset, tag: int, row: ProfileRow, action: str, counts: ActionCounts, basis: str) -> None:
        elem = ds[tag]
        vr = vr_for(tag, elem.VR)
        if action == "K":
            if vr == "SQ":
                self._recurse(ds, tag, counts, basis)
            return
        if action == "C":
            if not self._clean(ds, tag, vr, counts, basis):
                self._apply(ds, tag, row, row.basic_profile, counts, basis)
            return
        if action in ("U", "X/Z/U*"):
            if vr == "SQ":  # keep the references, with their instance UIDs remapped
                self._recurse(ds, tag, counts, basis)
                return
            action = "D"
        if action == "X/Z" and vr == "SQ" and tag not in _TYPE2_SEQUENCES:
            action = "X"  # a Type 3 sequence must not be empty (e.g. Referenced Study Sequence)
        action = _COMPOUND.get(action, action)  # the choice that keeps any IOD valid (docs explain)
        if action == "X":
            del ds[tag]
            counts.removed += 1
        elif action == "Z":
            ds[tag].value = Sequence() if vr == "SQ" else None
            counts.emptied += 1
        elif vr == "SQ":
            if keyword_for_tag(tag).endswith("CodeSequence"):  # a code can be a person's own ID: one dummy code
                ds[tag].value = Sequence([dummy_code()])
                counts.dummied += 1
            elif row.options.get("clean_structured_content") or row.options.get("clean_graphics"):
                ds[tag].value = Sequence()  # SR content or graphic text: free text no row removes, so no items
                counts.emptied += 1
            else:  # items keep their structure; every attribute inside follows its own row
                self._recurse(ds, tag, counts, basis)
        elif vr == "UI":
            self._remap_uids(elem, counts)
        else:
            ds.add_new(tag, vr, dummy_value(vr))
            counts.dummied += 1

    def _clean(self, ds: Dataset, tag: int, vr: str, counts: ActionCounts, basis: str) -> bool:
        """Action C; False when this value cannot be cleaned and the basic profile action must apply instead."""
        elem = ds[tag]
        if elem.value in (None, "", b"") or (vr == "SQ" and not elem.value):
            return True
        if vr in ("DA", "DT"):
            return self._shift_dates(elem, counts)
        if vr == "TM":  # the shift is whole days: time of day is kept
            return self.date_shift_days is not None
        if vr == "SQ":  # coded descriptors: codes are vocabulary, and every nested attribute follows its row
            self._recurse(ds, tag, counts, basis)
            return True
        if vr in ("CS", "AS", "DS", "IS", "US"):  # defined terms and measurements name no one
            counts.cleaned += 1
            return True
        if vr in _TEXT_VRS:  # free text cannot be proven clean: only text a person vetted is kept
            values = elem.value if isinstance(elem.value, list | pydicom.multival.MultiValue) else [elem.value]
            if all(str(v).strip().upper() in self.vetted_descriptors for v in values):
                counts.cleaned += 1
                return True
        return False

    def _remap_uids(self, elem, counts: ActionCounts) -> None:
        value = elem.value
        if isinstance(value, list | pydicom.multival.MultiValue):
            elem.value = [self.new_uid(v) for v in value]
        elif value not in (None, ""):
            elem.value = self.new_uid(value)
        else:
            return
        counts.uids_remapped += 1

    def _shift_dates(self, elem, counts: ActionCounts) -> bool:
        """Shift every value of a DA or DT element by the project's days; False (element untouched) if one fails."""
        if self.date_shift_days is None:
            return False
        shift = shift_date if elem.VR == "DA" else shift_datetime
        values = elem.value if isinstance(elem.value, list | pydicom.multival.MultiValue) else [elem.value]
        try:
            shifted = [shift(str(v), self.date_shift_days) for v in values]
        except (ValueError, OverflowError):
            return False
        elem.value = shifted if len(shifted) > 1 else shifted[0]
        counts.dates_shifted += 1
        return True


def _is_instance_uid(tag: int) -> bool:
    keyword = keyword_for_tag(tag)
    return not (keyword in _TYPE_UID_KEYWORDS or any(word in keyword for word in _TYPE_UID_WORDS))


def deidentify_file(path: str | Path, deidentifier: Deidentifier, counts: ActionCounts | None = None):
    """Read and de-identify one file: (data set ready to write, review reasons). DicomError names the file."""
    path = Path(path)
    ds = read_for_deid(path)
    media_class = str(getattr(ds, "file_meta", {}).get("MediaStorageSOPClassUID", "") or "")
    if media_class == "1.2.840.10008.1.3.10":
        raise DicomError(f"{path.name}: a DICOMDIR (media index of names and IDs), not an instance; not copied")
    reasons = deidentifier.review_reasons(ds)
    try:
        deidentifier.deidentify_dataset(ds, counts)
    except DicomError:
        raise
    except Exception as error:
        raise DicomError(f"{path.name}: cannot de-identify ({type(error).__name__}: {error})") from error
    return ds, reasons


def deidentify_folder(
    in_dir: str | Path,
    out_dir: str | Path,
    deidentifier: Deidentifier,
    progress: ProgressCallback | None = None,
    cancel: CancelCallback | None = None,
) -> DeidSummary:
    """De-identify every DICOM file under IN into OUT as ``<new series UID>/<new SOP instance UID>.dcm``.

    Flagged files go to ``OUT/needs-review/`` instead. Non-DICOM and unreadable files are listed in the summary,
    never fatal. OUT must be empty or absent (stale files of another run must not mix in); on cancel the files
    this run wrote are removed. ``progress(fraction, message)`` and ``cancel()`` follow core/jobs.py.
    """
    in_dir, out_dir = Path(in_dir).resolve(), Path(out_dir).resolve()
    if not in_dir.is_dir():
        raise DicomError(f"{in_dir}: the input folder does not exist")
    if out_dir == in_dir or in_dir in out_dir.parents or out_dir in in_dir.parents:
        raise DicomError(f"{out_dir}: the output folder must be outside the input folder {in_dir}, and vice versa")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise DicomError(f"{out_dir}: the output folder is not empty; use a new folder for each run")
    files = sorted(p for p in in_dir.rglob("*") if p.is_file())
    summary = DeidSummary(str(in_dir), str(out_dir), deidentifier.table.edition, deidentifier.method_options(),
                          deidentifier.date_shift_days, files_seen=len(files))  # fmt: skip
    written: dict[Path, str] = {}
    started = time.perf_counter()
    try:
        for done, path in enumerate(files, start=1):
            check_cancel(cancel, "de-identification")
            _one_file(path, in_dir, out_dir, deidentifier, summary, written)
            if progress is not None:
                progress(done / len(files), f"{done}/{len(files)} files")
    except BaseException:
        for path in written:  # nothing half-done is kept
            path.unlink(missing_ok=True)
        for folder in sorted({p.parent for p in written}, key=lambda p: len(p.parts), reverse=True):
            for empty in (folder, folder.parent):
                if empty != out_dir and empty.is_dir() and not any(empty.iterdir()):
                    empty.rmdir()
        raise
    summary.seconds = time.perf_counter() - started
    return summary


def _one_file(path: Path, in_dir: Path, out_dir: Path, deidentifier: Deidentifier, summary: DeidSummary, written):
    name = path.relative_to(in_dir).as_posix()
    counts = ActionCounts()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's warnings on odd values; outcomes go to the summary
        try:
            ds, reasons = deidentify_file(path, deidentifier, counts)
        except DicomError as error:
            if "not a DICOM file" not in str(error) and "DICOMDIR" not in str(error):
                summary.files_read += 1
            summary.skipped.append(FileNote(name, str(error).removeprefix(f"{path.name}: ")))
            return
        summary.files_read += 1
        uid = str(ds.get("SOPInstanceUID", "") or "") or deidentifier.new_uid(f"file:{name}")
        series = str(ds.get("SeriesInstanceUID", "") or "") or "unknown-series"
        target = out_dir / (NEEDS_REVIEW_DIR if reasons else "") / series / f"{uid}.dcm"
        copies = 1
        while target in written:  # same SOP Instance UID, other content: keep both, say so
            copies += 1
            target = target.with_name(f"{uid}-{copies}.dcm")
        if copies > 1:
            first = written[target.with_name(f"{uid}.dcm")]
            summary.duplicates.append(FileNote(name, f"same SOP Instance UID as {first}; written as {target.name}"))
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            ds.save_as(target, enforce_file_format="MediaStorageSOPClassUID" in ds.file_meta)
        except Exception as error:
            target.unlink(missing_ok=True)
            summary.skipped.append(FileNote(name, f"cannot write ({type(error).__name__}: {error})"))
            return
    written[target] = name
    summary.files_written += 1
    summary.counts.add(counts)
    if reasons:
        summary.flagged.append(FileNote(name, "; ".join(reasons)))
