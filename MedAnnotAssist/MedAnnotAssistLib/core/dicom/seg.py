"""DICOM SEG out and in with highdicom: one binary segment per protocol structure, on the source series' grid.

Export writes a BINARY Segmentation whose frames are the series' slices (empty frames omitted); each segment
carries the structure's codes, its name as SegmentLabel, the protocol colour as recommended CIELab display
colour and an algorithm type taken from the segment's AI provenance tags. Import maps segments back onto
protocol structures by code, then by name, as ``ReaderLabels`` on the series image grid.

The helpers shared with RTSTRUCT (source references with blank UIDs filled, labels put on the series grid,
per-segment tags of a ``.seg.nrrd``) live here too.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..labelio import STRUCTURE_TAG, Geometry, ReaderLabels, match_structure, read_reader, reoriented
from ..protocol import Code, Protocol, Structure
from ..provenance import ACCEPTED, REFINED, REJECTED, SUGGESTED, read_provenance
from . import DicomError

MANUFACTURER = "MedAnnotAssist"
MODEL_NAME = "MedAnnotAssist"
SEG_SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.1.66.4"
# first series number of derived objects when the source series has none
DEFAULT_SERIES_NUMBER = 1000


EXPLICIT_VR_LITTLE_ENDIAN, RLE_LOSSLESS = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.5"


def software_version() -> str:
    """The installed package's version (pyproject), or 0.1.0 when run from a source tree without install."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("medannotassist")
    except PackageNotFoundError:
        return "0.1.0"


@dataclass
class ExportReport:
    """What an export wrote and what it left out."""

    path: Path
    structures: list[str]  # protocol structure ids written, in segment / ROI number order
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (structure id or segment name, why)
    warnings: list[str] = field(default_factory=list)


@dataclass
class SourceReferences:
    """Header-only copies of the series' slices that a derived object can reference, with blank UIDs filled."""

    headers: list  # pydicom Datasets in slice order, no pixel data
    study_uid: str
    series_uid: str
    frame_of_reference_uid: str
    warnings: list[str] = field(default_factory=list)


def _derived_uid(*parts: str) -> str:
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=["MedAnnotAssist", *parts]))


def source_references(series) -> SourceReferences:
    """The series' slice headers as references: de-identified data often blanks the UIDs, so a blank
    SOPInstanceUID/SOPClassUID is taken from the file meta and a blank study, series or frame of reference
    UID is derived deterministically from the instance UIDs (the same series always gives the same UID)."""
    from pydicom import Dataset
    from pydicom.dataelem import DataElement

    warnings = []
    headers = []
    for dataset, source in zip(series.datasets, series.sources, strict=True):
        header = Dataset({tag: element for tag, element in dataset.items() if tag != 0x7FE00010})
        meta = getattr(dataset, "file_meta", None) or Dataset()
        header.file_meta = meta
        for keyword, meta_keyword in (("SOPInstanceUID", "MediaStorageSOPInstanceUID"),
                                      ("SOPClassUID", "MediaStorageSOPClassUID")):  # fmt: skip
            if not str(dataset.get(keyword, "") or ""):
                value = str(meta.get(meta_keyword, "") or "")
                if not value:
                    raise DicomError(f"{source}: no {keyword} (blank, and no {meta_keyword} in the file meta)")
                # a new element: the datasets of the series share theirs with this header
                header[keyword] = DataElement(keyword, "UI", value)
        headers.append(header)
    instance_uids = [str(h.SOPInstanceUID) for h in headers]
    if len(set(instance_uids)) != len(instance_uids):
        raise DicomError(f"series {series.series_uid or '(blank UID)'}: two slices share one SOPInstanceUID")
    first = series.datasets[0]
    frame_uid = str(first.get("FrameOfReferenceUID", "") or "")
    if not frame_uid:
        frame_uid = _derived_uid("frame", *instance_uids)
        warnings.append(f"{series.sources[0]}: blank FrameOfReferenceUID; derived {frame_uid}")
    study_uid = str(series.study_uid or "")
    if not study_uid:
        study_uid = _derived_uid("study", frame_uid)
        warnings.append(f"{series.sources[0]}: blank StudyInstanceUID; derived {study_uid} from the frame of reference")
    series_uid = str(series.series_uid or "")
    if not series_uid:
        series_uid = _derived_uid("series", *instance_uids)
        warnings.append(f"{series.sources[0]}: blank SeriesInstanceUID; derived {series_uid} from the instance UIDs")
    for header in headers:
        for keyword, value in (("StudyInstanceUID", study_uid), ("SeriesInstanceUID", series_uid),
                               ("FrameOfReferenceUID", frame_uid)):  # fmt: skip
            if str(header.get(keyword, "") or "") != value:
                header[keyword] = DataElement(keyword, "UI", value)
    return SourceReferences(headers, study_uid, series_uid, frame_uid, warnings)


def read_segment_tags(path: str | Path, protocol: Protocol) -> dict[str, dict[str, str]]:
    """Per protocol structure id, the tags of its segment in a ``.seg.nrrd`` (empty for other files), read
    from the header only. Matched to structures as labelio does (StructureId tag, then id or name)."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise DicomError(f"{path}: cannot read the header: {str(exc).strip().splitlines()[-1]}") from None
    keys = set(reader.GetMetaDataKeys())
    found: dict[str, dict[str, str]] = {}
    index = 0
    while f"Segment{index}_Name" in keys:
        text = reader.GetMetaData(f"Segment{index}_Tags") if f"Segment{index}_Tags" in keys else ""
        tags = {}
        for item in text.split("|"):
            key, separator, value = item.partition(":")
            if separator:
                tags[key] = value
        structure = match_structure(protocol, reader.GetMetaData(f"Segment{index}_Name"), tags.get(STRUCTURE_TAG))
        if structure is not None:
            found.setdefault(structure.id, tags)
        index += 1
    return found


def labels_for_series(
    labels_path: str | Path, series, protocol: Protocol, label_names: dict[int, str] | None = None
) -> tuple[ReaderLabels, dict[str, dict[str, str]]]:
    """A ``.seg.nrrd`` or labelmap (with ``label_names``) read, put exactly on the series grid, with its
    per-structure segment tags: what the CLI passes to ``export_seg`` and ``export_rtstruct``."""
    try:
        labels = read_reader(labels_path, protocol, label_names)
        labels = reoriented(labels, Geometry.of(series.image))
    except DicomError:
        raise
    except ValueError as exc:
        raise DicomError(str(exc)) from None
    tags = read_segment_tags(labels_path, protocol) if str(labels_path).endswith(".nrrd") else {}
    return labels, tags


def check_on_series_grid(labels: ReaderLabels, series) -> None:
    differences = Geometry.of(series.image).differences(labels.geometry)
    if differences:
        raise DicomError(
            f"{labels.path or labels.name}: the labels are not on the grid of series {series.series_uid or '?'} "
            f"({'; '.join(differences)}); use labels_for_series, which reorients them, or resample first"
        )


def check_codes(protocol: Protocol, structure: Structure) -> None:
    """A SEG segment needs a category and a type code; name the structure and the JSON field that lacks it."""
    index = next(i for i, s in enumerate(protocol.structures) if s.id == structure.id)
    for key, code in (("category", structure.terminology.category), ("type", structure.terminology.type)):
        if code is None or not (code.scheme and code.value and code.meaning):
            raise DicomError(
                f"{protocol.source}: $.structures[{index}].terminology.{key}: structure '{structure.id}' "
                f"({structure.name}) has no {key} code (CodingSchemeDesignator, CodeValue and CodeMeaning are "
                f"needed for DICOM export)"
            )


def slice_presence(labels: ReaderLabels) -> list[np.ndarray]:
    """Per layer, which label values occur on which slice: (slices, values) booleans, one pass per slice
    instead of one full-volume comparison per structure."""
    presence = []
    for layer in labels.layers:
        if layer.size and layer.min() < 0:
            raise DicomError(f"{labels.path or labels.name}: negative label values ({int(layer.min())})")
        size = int(layer.max(initial=0)) + 1
        presence.append(np.stack([np.bincount(plane.ravel(), minlength=size) > 0 for plane in layer]))
    return presence


def present_structures(
    labels: ReaderLabels, protocol: Protocol, require_codes: bool = True, presence: list[np.ndarray] | None = None
) -> tuple[list[tuple[Structure, int, int]], list[tuple[str, str]]]:
    """(structure, layer, value) of every protocol structure with voxels, in protocol order, and what was
    skipped with why. Raises DicomError when nothing is left to export, or (``require_codes``) when a
    structure to export lacks its category or type code."""
    presence = presence if presence is not None else slice_presence(labels)
    present, skipped = [], []
    for structure in protocol.structures:
        if structure.id not in labels.segments:
            skipped.append((structure.id, "not in the labels"))
            continue
        layer, value = labels.segments[structure.id]
        if value >= presence[layer].shape[1] or value <= 0 or not presence[layer][:, value].any():
            skipped.append((structure.id, "no voxels"))
            continue
        present.append((structure, layer, value))
    skipped += [(name, f"not in protocol {protocol.label}") for name in labels.unmatched]
    if not present:
        what = "; ".join(f"{name}: {why}" for name, why in skipped) or "no segments"
        raise DicomError(f"{labels.path or labels.name}: no protocol structure has any voxels to export ({what})")
    for structure, _, _ in present if require_codes else ():
        check_codes(protocol, structure)
    return present, skipped


def algorithm_of(tags: dict[str, str] | None) -> tuple[str, dict | None]:
    """(DICOM algorithm type, provenance or None): no AI tags or rejected -> MANUAL; suggested or accepted
    -> AUTOMATIC; refined (an expert edited the AI's mask) -> SEMIAUTOMATIC."""
    provenance = read_provenance(tags or {})
    if provenance is None or provenance["state"] == REJECTED:
        return "MANUAL", None
    if provenance["state"] in (SUGGESTED, ACCEPTED):
        return "AUTOMATIC", provenance
    if provenance["state"] == REFINED:
        return "SEMIAUTOMATIC", provenance
    return "MANUAL", None


def derived_series_number(series) -> int:
    number = series.datasets[0].get("SeriesNumber")
    return int(number) + DEFAULT_SERIES_NUMBER if number not in (None, "") else DEFAULT_SERIES_NUMBER


def tracking_uid(study_uid: str, protocol: Protocol, structure: Structure) -> str:
    """One UID per structure and study, so the same structure in later exports of the study is tracked."""
    return _derived_uid("tracking", study_uid, protocol.id, structure.id)


def _coded(code: Code):
    from highdicom.sr import CodedConcept

    return CodedConcept(code.value, code.scheme, code.meaning)


def _segment_description(number: int, structure: Structure, protocol: Protocol, study_uid: str, tags):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    terminology = structure.terminology
    algorithm_type, provenance = algorithm_of(tags)
    identification = None
    if provenance is not None:
        identification = hd.AlgorithmIdentificationSequence(
            name=provenance["engine"][:64],
            family=codes.cid7162.ArtificialIntelligence,
            version=(provenance["version"] or "unknown")[:64],
            source=MANUFACTURER,
        )
    description = hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=structure.name[:64],
        segmented_property_category=_coded(terminology.category),
        segmented_property_type=_coded(terminology.type),
        algorithm_type=algorithm_type,
        algorithm_identification=identification,
        tracking_uid=tracking_uid(study_uid, protocol, structure),
        tracking_id=structure.id[:64],
        anatomic_regions=[_coded(terminology.anatomic_region)] if terminology.anatomic_region else None,
        display_color=hd.color.CIELabColor.from_rgb(*(round(c * 255) for c in structure.color_rgb)),
    )
    if terminology.type_modifier:
        description.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
            _coded(terminology.type_modifier)
        ]
    if terminology.anatomic_region and terminology.anatomic_region_modifier:
        description.AnatomicRegionSequence[0].AnatomicRegionModifierSequence = [
            _coded(terminology.anatomic_region_modifier)
        ]
    return description


def _pixel_array(
    labels: ReaderLabels, present: list[tuple[Structure, int, int]], presence: list[np.ndarray]
) -> tuple[np.ndarray, slice]:
    """Segment pixels for the slices with content only: a label array (segment numbers 1..N) when all
    structures share one layer (cheaper than N boolean volumes), else stacked booleans (segments may overlap)."""
    content = np.zeros(labels.layers[0].shape[0], bool)
    for _, layer, value in present:
        content |= presence[layer][:, value]
    slices = np.flatnonzero(content)
    kept = slice(int(slices[0]), int(slices[-1]) + 1)
    layers = {layer for _, layer, _ in present}
    if len(layers) == 1:
        layer = labels.layers[layers.pop()][kept]
        lookup = np.zeros(int(layer.max()) + 1, np.uint8 if len(present) < 256 else np.uint16)
        for number, (_, _, value) in enumerate(present, start=1):
            lookup[value] = number
        return lookup[layer], kept
    stacked = np.stack([labels.layers[layer][kept] == value for _, layer, value in present], axis=-1)
    return stacked.astype(np.uint8), kept


def export_seg(
    series,
    labels: ReaderLabels,
    protocol: Protocol,
    path: str | Path,
    *,
    segment_tags: dict[str, dict[str, str]] | None = None,
    series_description: str | None = None,
    content_creator: str | None = None,
    labelmap: bool = False,
) -> ExportReport:
    """Write a DICOM SEG (BINARY, explicit VR little endian) of the protocol structures present in ``labels``,
    which must be on the series grid (``labels_for_series`` puts them there). ``segment_tags`` (structure id
    -> segment tags, from ``read_segment_tags``) give each segment its algorithm type.

    ``labelmap=True`` writes the Label Map Segmentation IOD instead (one 8-bit frame per slice, RLE
    compressed; segments must not overlap): about 10x faster and 100x smaller, but newer (2024) than the
    dciodvfy that Debian ships, and not yet read by every viewer."""
    import highdicom as hd

    check_on_series_grid(labels, series)
    presence = slice_presence(labels)
    present, skipped = present_structures(labels, protocol, presence=presence)
    references = source_references(series)
    pixels, kept = _pixel_array(labels, present, presence)
    if labelmap and pixels.ndim == 4:  # segments on several layers: one label array if they do not overlap
        overlap = pixels.sum(axis=-1, dtype=np.uint16) > 1
        if overlap.any():
            voxel = tuple(int(i[0]) for i in np.nonzero(overlap))
            names = [present[n][0].id for n in np.flatnonzero(pixels[voxel])]
            raise DicomError(f"a label-map SEG needs segments that do not overlap: {' and '.join(names)} share voxels")
        pixels = (pixels * np.arange(1, pixels.shape[-1] + 1, dtype=np.uint8)).sum(axis=-1, dtype=np.uint8)
    descriptions = [
        _segment_description(number, structure, protocol, references.study_uid, (segment_tags or {}).get(structure.id))
        for number, (structure, _, _) in enumerate(present, start=1)
    ]
    # only the slices with content go in; highdicom matches their positions to the source slices
    positions = [
        hd.PlanePositionSequence(hd.CoordinateSystemNames.PATIENT, header.ImagePositionPatient)
        for header in references.headers[kept]
    ]
    description = series_description or f"{MANUFACTURER} SEG {protocol.label}"
    segmentation = hd.seg.Segmentation(
        source_images=references.headers,
        pixel_array=pixels,
        segmentation_type=(
            hd.seg.SegmentationTypeValues.LABELMAP if labelmap else hd.seg.SegmentationTypeValues.BINARY
        ),
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=derived_series_number(series),
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=MODEL_NAME,
        software_versions=software_version(),
        device_serial_number="1",
        content_description=protocol.title[:64],
        content_label=_content_label(protocol),
        content_creator_name=content_creator,
        plane_positions=positions,
        omit_empty_frames=True,
        series_description=description[:64],
        transfer_syntax_uid=RLE_LOSSLESS if labelmap else EXPLICIT_VR_LITTLE_ENDIAN,
    )
    # BINARY frames are 1 bit per pixel; frame compression (workers) does not apply, so none is started
    path = save_atomically(segmentation, path)
    return ExportReport(path, [s.id for s, _, _ in present], skipped, references.warnings)


def save_atomically(dataset, path: str | Path) -> Path:
    """Write under a temporary name and rename when complete, so a failed export leaves no partial file."""
    path = Path(path)
    partial = path.with_name(path.name + ".part")
    try:
        dataset.save_as(partial, enforce_file_format=True)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def _content_label(protocol: Protocol) -> str:
    """ContentLabel is a CS: upper case, digits, space or underscore, at most 16 characters."""
    text = "".join(c if c.isalnum() else "_" for c in protocol.id.upper())
    return text[:16].rstrip("_") or "SEGMENTATION"  # a CS ends with neither space nor underscore


def _concept(item) -> tuple[str, str] | None:
    return (str(item.CodingSchemeDesignator), str(item.CodeValue)) if item is not None else None


def _first(dataset, keyword: str):
    sequence = dataset.get(keyword) if dataset is not None else None
    return sequence[0] if sequence else None


def match_by_codes(protocol: Protocol, type_, modifier, region) -> Structure | None:
    """The protocol structure with the same type (and modifier and region where both have one)."""
    wanted_type, wanted_modifier, wanted_region = _concept(type_), _concept(modifier), _concept(region)
    candidates = []
    for structure in protocol.structures:
        terminology = structure.terminology
        if terminology.type is None or (terminology.type.scheme, terminology.type.value) != wanted_type:
            continue
        mine = terminology.type_modifier
        if ((mine.scheme, mine.value) if mine else None) != wanted_modifier:
            continue
        candidates.append(structure)
    if len(candidates) > 1 and wanted_region is not None:
        candidates = [
            s
            for s in candidates
            if s.terminology.anatomic_region
            and (s.terminology.anatomic_region.scheme, s.terminology.anatomic_region.value) == wanted_region
        ]
    return candidates[0] if len(candidates) == 1 else None


def read_seg(path: str | Path, series, protocol: Protocol) -> ReaderLabels:
    """A DICOM SEG on the series image grid: one layer holding all segments when they do not overlap (one
    layer per segment otherwise), mapped onto protocol structures by code, then by TrackingID or label."""
    import highdicom as hd

    path = Path(path)
    try:
        segmentation = hd.seg.segread(path)
    except Exception as exc:  # highdicom and pydicom raise many types on files that are not SEG
        raise DicomError(f"{path}: cannot read as DICOM SEG ({type(exc).__name__}: {exc})") from None
    references = source_references(series)
    referenced = [str(item.SeriesInstanceUID) for item in segmentation.get("ReferencedSeriesSequence", [])]
    if references.series_uid not in referenced:
        raise DicomError(
            f"{path}: the SEG refers to source series {', '.join(referenced) or '(none)'}, which is absent: the "
            f"given series is {references.series_uid} ({series.sources[0] if series.sources else '?'})"
        )
    uids = [str(h.SOPInstanceUID) for h in references.headers]
    geometry = Geometry.of(series.image)
    shape = tuple(reversed(geometry.size))
    numbers = list(segmentation.get_segment_numbers())
    segments: dict[str, tuple[int, int]] = {}
    unmatched: list[str] = []
    chosen: list[tuple[int, str]] = []
    for number in numbers:
        item = segmentation.get_segment_description(number)
        structure = match_by_codes(
            protocol,
            _first(item, "SegmentedPropertyTypeCodeSequence"),
            _first(_first(item, "SegmentedPropertyTypeCodeSequence"), "SegmentedPropertyTypeModifierCodeSequence"),
            _first(item, "AnatomicRegionSequence"),
        ) or match_structure(protocol, str(item.SegmentLabel), str(item.get("TrackingID", "") or "") or None)
        if structure is None or structure.id in segments:
            unmatched.append(str(item.SegmentLabel))
            continue
        segments[structure.id] = (0, 0)
        chosen.append((number, structure.id))
    layers: list[np.ndarray] = []
    for number, structure_id in chosen:
        # one segment at a time: highdicom cannot combine overlapping segments, and N stacked volumes are big
        mask = segmentation.get_pixels_by_source_instance(
            source_sop_instance_uids=uids, segment_numbers=[number], dtype=np.uint8
        )[..., 0].reshape(shape)
        segments[structure_id] = place_in_layers(layers, mask.astype(bool, copy=False), shape)
    if not layers:
        layers.append(np.zeros(shape, np.uint8))
    return ReaderLabels(path.name.removesuffix(".dcm"), path, geometry, layers, segments, unmatched)


def place_in_layers(layers: list[np.ndarray], mask: np.ndarray, shape) -> tuple[int, int]:
    """(layer, value) of the mask put in the first layer where it overlaps nothing, with that layer's next
    label value; a new layer when it overlaps every layer."""
    for index, layer in enumerate(layers):
        top = int(layer.max())
        if top < np.iinfo(layer.dtype).max and not layer[mask].any():
            layer[mask] = top + 1
            return index, top + 1
    layer = np.zeros(shape, np.uint8)
    layer[mask] = 1
    layers.append(layer)
    return len(layers) - 1, 1


def now_date_time() -> tuple[str, str]:
    moment = datetime.datetime.now()
    return moment.strftime("%Y%m%d"), moment.strftime("%H%M%S")
