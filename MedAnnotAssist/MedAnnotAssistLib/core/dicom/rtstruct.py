"""DICOM RTSTRUCT out and in with pydicom: one ROI per protocol structure, closed planar contours per slice.

Export writes one ROI per structure present, named by its TG-263 name (the structure name, with a warning,
when the protocol has none), coloured as in the protocol, with its codes in the RT ROI Observations and
contours on the series' slices in patient coordinates (mm). Holes and islands follow the even-odd convention
of ``contours``. Import fills each slice's contours with the even-odd rule at the series' pixel centres.

RT ROI Interpreted Type: ORGAN for anatomical structures, tissues and body substances (category codes in
``ORGAN_CATEGORIES``); empty (the standard's "unknown" for this Type 2 attribute) for everything else, e.g. a
lesion, which may or may not be a treatment target (GTV) - the planner decides.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..labelio import Geometry, ReaderLabels, match_structure
from ..protocol import Code, Protocol, Structure
from . import DicomError
from .contours import contours_to_mask, index_to_patient, mask_to_contours, patient_to_index
from .seg import (
    MANUFACTURER,
    MODEL_NAME,
    ExportReport,
    algorithm_of,
    check_on_series_grid,
    derived_series_number,
    match_by_codes,
    now_date_time,
    place_in_layers,
    present_structures,
    save_atomically,
    software_version,
    source_references,
)

RTSTRUCT_SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.1.481.3"
# what RT Referenced Study Sequence items name as their SOP class (Detached Study Management), as TPS expect
STUDY_REFERENCE_SOP_CLASS_UID = "1.2.840.10008.3.1.2.3.1"
# SNOMED CT categories exported as ORGAN: anatomical structure (old and new code), tissue, body substance
ORGAN_CATEGORIES = {("SCT", "123037004"), ("SCT", "91723000"), ("SCT", "85756007"), ("SCT", "91720002")}
CONTOUR_DATA = 0x30060050
# a contour counts as lying on a slice when it is within this fraction of the slice spacing of it
PLANE_TOLERANCE = 0.1
# patient and study attributes copied from the series (Type 2 ones are written empty when absent)
PATIENT_STUDY_TYPE2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)
PATIENT_STUDY_OPTIONAL = ("IssuerOfPatientID", "StudyDescription", "PatientAge", "PatientWeight", "PatientSize")


def interpreted_type(structure: Structure) -> str:
    category = structure.terminology.category
    return "ORGAN" if category and (category.scheme, category.value) in ORGAN_CATEGORIES else ""


def roi_name(structure: Structure, warnings: list[str]) -> str:
    if structure.tg263:
        return structure.tg263
    warnings.append(f"structure '{structure.id}' has no TG-263 name in the protocol; ROIName is its name")
    return structure.name[:64]


def _code_item(code: Code):
    from pydicom import Dataset

    item = Dataset()
    item.CodeValue = code.value
    item.CodingSchemeDesignator = code.scheme
    item.CodeMeaning = code.meaning
    return item


def _has_code(code: Code | None) -> bool:
    return bool(code and code.scheme and code.value and code.meaning)


def _ds(values: np.ndarray) -> list[str]:
    """Decimal strings of at most 16 characters: 0.1 µm is far below any pixel."""
    return [f"{v:.4f}".rstrip("0").rstrip(".") for v in np.round(values, 4).ravel()]


def _contour_sequence(mask: np.ndarray, geometry: Geometry, headers) -> list:
    from pydicom import Dataset
    from pydicom.config import IGNORE
    from pydicom.dataelem import DataElement

    items = []
    origin, spacing, direction = geometry.origin, geometry.spacing, geometry.direction
    for k in np.flatnonzero(mask.any(axis=(1, 2))):
        for contour in mask_to_contours(mask[k]):
            kji = np.column_stack([np.full(len(contour), k, float), contour])
            image = Dataset()
            image.ReferencedSOPClassUID = headers[k].SOPClassUID
            image.ReferencedSOPInstanceUID = headers[k].SOPInstanceUID
            item = Dataset()
            item.ContourImageSequence = [image]
            item.ContourGeometricType = "CLOSED_PLANAR"
            item.NumberOfContourPoints = len(contour)
            item.ContourNumber = len(items) + 1
            # our own decimal strings are valid DS: skipping pydicom's per-value check makes writing ~3x faster
            item["ContourData"] = DataElement(
                CONTOUR_DATA, "DS", _ds(index_to_patient(kji, origin, spacing, direction)), validation_mode=IGNORE
            )
            items.append(item)
    return items


def _base_dataset(series, references, protocol: Protocol, description: str | None):
    from pydicom import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

    first = references.headers[0]
    date, time = now_date_time()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RTSTRUCT_SOP_CLASS_UID
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    if "SpecificCharacterSet" in first:
        ds.SpecificCharacterSet = first.SpecificCharacterSet
    ds.SOPClassUID = RTSTRUCT_SOP_CLASS_UID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    for keyword in PATIENT_STUDY_TYPE2:
        setattr(ds, keyword, first.get(keyword, "") or "")
    for keyword in PATIENT_STUDY_OPTIONAL:
        if first.get(keyword) not in (None, ""):
            setattr(ds, keyword, first.get(keyword))
    ds.StudyInstanceUID = references.study_uid
    # the Frame of Reference module: newer editions of the RT Structure Set IOD include it
    ds.FrameOfReferenceUID = references.frame_of_reference_uid
    ds.PositionReferenceIndicator = first.get("PositionReferenceIndicator", "") or ""
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = derived_series_number(series)
    ds.SeriesDate, ds.SeriesTime = date, time
    ds.SeriesDescription = (description or f"{MANUFACTURER} RTSTRUCT {protocol.label}")[:64]
    ds.OperatorsName = ""
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = MODEL_NAME
    ds.SoftwareVersions = software_version()
    ds.DeviceSerialNumber = "1"
    ds.InstanceNumber = 1
    ds.StructureSetLabel = protocol.id[:16]
    ds.StructureSetName = protocol.label[:64]
    ds.StructureSetDescription = protocol.title
    ds.StructureSetDate, ds.StructureSetTime = date, time
    series_item = Dataset()
    series_item.SeriesInstanceUID = references.series_uid
    series_item.ContourImageSequence = []
    for header in references.headers:
        image = Dataset()
        image.ReferencedSOPClassUID = header.SOPClassUID
        image.ReferencedSOPInstanceUID = header.SOPInstanceUID
        series_item.ContourImageSequence.append(image)
    study_item = Dataset()
    study_item.ReferencedSOPClassUID = STUDY_REFERENCE_SOP_CLASS_UID
    study_item.ReferencedSOPInstanceUID = references.study_uid
    study_item.RTReferencedSeriesSequence = [series_item]
    frame_item = Dataset()
    frame_item.FrameOfReferenceUID = references.frame_of_reference_uid
    frame_item.RTReferencedStudySequence = [study_item]
    ds.ReferencedFrameOfReferenceSequence = [frame_item]
    ds.StructureSetROISequence, ds.ROIContourSequence, ds.RTROIObservationsSequence = [], [], []
    return ds


def export_rtstruct(
    series,
    labels: ReaderLabels,
    protocol: Protocol,
    path: str | Path,
    *,
    segment_tags: dict[str, dict[str, str]] | None = None,
    series_description: str | None = None,
    interpreter: str | None = None,
) -> ExportReport:
    """Write an RT Structure Set of the protocol structures present in ``labels`` (on the series grid,
    see ``labels_for_series``). ``segment_tags`` give each ROI its generation algorithm (AI provenance)."""
    from pydicom import Dataset

    check_on_series_grid(labels, series)
    present, skipped = present_structures(labels, protocol, require_codes=False)
    references = source_references(series)
    warnings = list(references.warnings)
    geometry = Geometry.of(series.image)
    ds = _base_dataset(series, references, protocol, series_description)
    for number, (structure, layer, value) in enumerate(present, start=1):
        roi = Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = references.frame_of_reference_uid
        roi.ROIName = roi_name(structure, warnings)
        roi.ROIDescription = structure.name[:64]
        algorithm, provenance = algorithm_of((segment_tags or {}).get(structure.id))
        roi.ROIGenerationAlgorithm = algorithm
        if provenance is not None:
            roi.ROIGenerationDescription = f"{provenance['engine']} {provenance['version']}".strip()[:64]
        ds.StructureSetROISequence.append(roi)
        contour = Dataset()
        contour.ReferencedROINumber = number
        contour.ROIDisplayColor = [round(c * 255) for c in structure.color_rgb]
        contour.ContourSequence = _contour_sequence(labels.layers[layer] == value, geometry, references.headers)
        ds.ROIContourSequence.append(contour)
        observation = Dataset()
        observation.ObservationNumber = number
        observation.ReferencedROINumber = number
        observation.RTROIInterpretedType = interpreted_type(structure)
        observation.ROIInterpreter = interpreter or ""
        terminology = structure.terminology
        if _has_code(terminology.type):
            identification = _code_item(terminology.type)
            if _has_code(terminology.type_modifier):
                identification.SegmentedPropertyTypeModifierCodeSequence = [_code_item(terminology.type_modifier)]
            observation.RTROIIdentificationCodeSequence = [identification]
        ds.RTROIObservationsSequence.append(observation)
    path = save_atomically(ds, path)
    return ExportReport(path, [s.id for s, _, _ in present], skipped, warnings)


def _referenced_series(ds) -> list[str]:
    found = []
    for frame in ds.get("ReferencedFrameOfReferenceSequence", []):
        for study in frame.get("RTReferencedStudySequence", []):
            found += [str(item.SeriesInstanceUID) for item in study.get("RTReferencedSeriesSequence", [])]
    return found


def _match_roi(protocol: Protocol, name: str, observation) -> Structure | None:
    structure = match_structure(protocol, name)
    if structure is None and observation is not None and observation.get("RTROIIdentificationCodeSequence"):
        code = observation.RTROIIdentificationCodeSequence[0]
        modifiers = code.get("SegmentedPropertyTypeModifierCodeSequence")
        structure = match_by_codes(protocol, code, modifiers[0] if modifiers else None, None)
    return structure


def read_rtstruct(path: str | Path, series, protocol: Protocol, warnings: list[str] | None = None) -> ReaderLabels:
    """An RTSTRUCT's ROIs on the series image grid, matched to protocol structures by TG-263 name, name or
    id, then by code. Each slice's closed planar contours are filled with the even-odd rule; ROIs that do
    not overlap share a layer. Contours that are not closed planar or not on a slice are left out and
    reported in ``warnings``."""
    import pydicom

    path = Path(path)
    notes = warnings if warnings is not None else []
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:  # pydicom raises many types on damaged files
        raise DicomError(f"{path}: cannot read as DICOM ({type(exc).__name__}: {exc})") from None
    if str(ds.get("SOPClassUID", "")) != RTSTRUCT_SOP_CLASS_UID:
        raise DicomError(f"{path}: not an RT Structure Set (SOPClassUID {ds.get('SOPClassUID', '?')})")
    references = source_references(series)
    referenced = _referenced_series(ds)
    if referenced and references.series_uid not in referenced:
        raise DicomError(
            f"{path}: the RTSTRUCT refers to series {', '.join(referenced)}, which is absent: the given series "
            f"is {references.series_uid} ({series.sources[0] if series.sources else '?'})"
        )
    frames = {str(roi.get("ReferencedFrameOfReferenceUID", "")) for roi in ds.get("StructureSetROISequence", [])}
    if not referenced and frames - {"", references.frame_of_reference_uid}:
        raise DicomError(
            f"{path}: the ROIs are in frame of reference {', '.join(sorted(frames))}, the given series in "
            f"{references.frame_of_reference_uid}"
        )
    geometry = Geometry.of(series.image)
    shape = tuple(reversed(geometry.size))
    slice_of_uid = {str(h.SOPInstanceUID): k for k, h in enumerate(references.headers)}
    names = {int(roi.ROINumber): str(roi.get("ROIName", "")) for roi in ds.get("StructureSetROISequence", [])}
    observations = {int(o.ReferencedROINumber): o for o in ds.get("RTROIObservationsSequence", [])}
    layers: list[np.ndarray] = []
    segments: dict[str, tuple[int, int]] = {}
    unmatched: list[str] = []
    for roi_contour in ds.get("ROIContourSequence", []):
        number = int(roi_contour.ReferencedROINumber)
        name = names.get(number, f"ROI {number}")
        structure = _match_roi(protocol, name, observations.get(number))
        if structure is None or structure.id in segments:
            unmatched.append(name)
            continue
        mask = _roi_mask(roi_contour, name, geometry, shape, slice_of_uid, notes)
        segments[structure.id] = place_in_layers(layers, mask, shape)
    if not layers:
        layers.append(np.zeros(shape, np.uint8))
    return ReaderLabels(path.name.removesuffix(".dcm"), path, geometry, layers, segments, unmatched)


def _roi_mask(roi_contour, name: str, geometry: Geometry, shape, slice_of_uid, notes: list[str]) -> np.ndarray:
    per_slice: dict[int, list[np.ndarray]] = {}
    for index, contour in enumerate(roi_contour.get("ContourSequence", [])):
        kind = str(contour.get("ContourGeometricType", ""))
        if kind != "CLOSED_PLANAR":
            notes.append(f"ROI {name}: contour {index + 1} is {kind or 'untyped'}, not CLOSED_PLANAR; left out")
            continue
        points = _contour_points(contour)
        if len(points) < 3:
            notes.append(f"ROI {name}: contour {index + 1} has fewer than 3 points; left out")
            continue
        kji = patient_to_index(points, geometry.origin, geometry.spacing, geometry.direction)
        k = int(round(float(np.mean(kji[:, 0]))))
        images = contour.get("ContourImageSequence")
        if images:
            k = slice_of_uid.get(str(images[0].ReferencedSOPInstanceUID), k)
        if not 0 <= k < shape[0] or np.max(np.abs(kji[:, 0] - k)) > PLANE_TOLERANCE:
            notes.append(f"ROI {name}: contour {index + 1} does not lie on a slice of the series; left out")
            continue
        per_slice.setdefault(k, []).append(kji[:, 1:])
    mask = np.zeros(shape, bool)
    for k, contours in per_slice.items():
        mask[k] = contours_to_mask(contours, shape[1:])
    return mask


def _contour_points(contour) -> np.ndarray:
    """ContourData as (n, 3) floats, parsed from the raw bytes when still unparsed (pydicom's DS objects cost
    microseconds per value, and a structure set holds hundreds of thousands)."""
    element = contour.get_item(CONTOUR_DATA)
    if element is None:
        return np.zeros((0, 3))
    value = element.value
    if isinstance(value, bytes):
        text = value.decode("ascii").strip(" \x00")
        values = np.array(text.split("\\"), dtype=float) if text else np.zeros(0)
    else:
        values = np.asarray(contour.ContourData, dtype=float)
    return values.reshape(-1, 3)
