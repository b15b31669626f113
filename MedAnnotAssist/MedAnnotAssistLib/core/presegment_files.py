"""``medannot presegment``: an image (NIfTI/NRRD file or a DICOM series folder) in, a Slicer segmentation
with provenance tags out."""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import provenance as prov
from .engines import get_engine
from .engines.base import EngineError, EngineResult, match_protocol
from .labelio import Geometry, write_json, write_seg_nrrd
from .protocol import Protocol

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")


def read_image(path: str | Path):
    """A SimpleITK image from a file, or from the one DICOM series in a folder or zip archive."""
    import SimpleITK as sitk

    path = Path(path)
    if path.is_dir() or (path.is_file() and zipfile.is_zipfile(path)):
        from .dicom.series import read_series

        try:
            return read_series(path).image
        except ValueError as error:  # the geometry checks name the files
            raise EngineError(str(error)) from None
    if not path.is_file():
        raise EngineError(f"{path}: no such file")
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise EngineError(f"{path}: cannot read as an image: {str(error).strip().splitlines()[-1]}") from None


def _protocol_labels(info, result: EngineResult, protocol: Protocol) -> tuple[np.ndarray, list, dict, list]:
    """The result on the protocol's segment structures only: (labels, segments, engine ids per structure id,
    dropped engine structure names). Parts (lung lobes) join their whole; absent structures stay empty."""
    matched = match_protocol(info, protocol, parts=True)
    structures = [s for s in protocol.structures if s.kind == "segment"]
    value_of = {s.id: value for value, s in enumerate(structures, start=1)}
    lookup = np.zeros(int(result.labels.max(initial=0)) + 1, np.uint16)
    sources: dict[str, list[str]] = {s.id: [] for s in structures}
    dropped = []
    for value, engine_id in sorted(result.names.items()):
        structure = matched.get(engine_id)
        if structure is None:
            dropped.append(info.structure(engine_id).name)
            continue
        sources[structure.id].append(engine_id)
        if value < len(lookup):
            lookup[value] = value_of[structure.id]
    labels = lookup[result.labels]
    segments = [(value_of[s.id], s) for s in structures]
    return labels, segments, sources, dropped


def write_engine_result(path: str | Path, image, engine, result: EngineResult, protocol: Protocol | None) -> dict:
    """Write the result as a ``.seg.nrrd`` with AI provenance tags; returns a per-structure summary.

    With a protocol: one segment per protocol structure, named and coded by it, matched by code then by the
    maintained name map (``core.structure_names``); engine structures the protocol lacks are dropped (listed in
    ``dropped``), and protocol structures the engine did not produce are written empty (listed in ``empty``).
    Without one: every engine structure, named and coded by the engine."""
    info = engine.info()
    geometry = Geometry.of(image)
    unit = float(np.prod(geometry.spacing)) / 1000.0
    if protocol is not None:
        labels, segments, sources, dropped = _protocol_labels(info, result, protocol)
    else:
        labels, dropped = result.labels, []
        segments = [(v, info.structure(e).as_structure()) for v, e in sorted(result.names.items())]
        sources = {structure.id: [result.names[value]] for value, structure in segments}
    tags, summary, empty = {}, {}, []
    for value, structure in segments:
        produced = sources[structure.id]
        if not produced:
            empty.append(structure.name)
            continue
        confidences = [result.confidence[e] for e in produced if result.confidence.get(e) is not None]
        confidence = min(confidences) if confidences else None
        tags[structure.id] = prov.provenance_tags(result.provenance, confidence)
        summary[structure.name] = {
            "structure_id": structure.id,
            "engine_structure": ", ".join(produced),
            "volume_ml": round(int(np.count_nonzero(labels == value)) * unit, 3),
            "confidence": confidence,
        }
    path = Path(path)
    if not path.name.endswith(".seg.nrrd"):
        raise EngineError(f"{path}: the output must be a .seg.nrrd file")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial.nrrd")
    write_seg_nrrd(partial, labels, geometry, segments, protocol, segment_tags=tags)
    partial.replace(path)  # nothing half-written under the final name
    return {
        "structures": summary,
        "protocol": protocol.label if protocol is not None else None,
        "dropped": dropped,
        "empty": empty,
        "uncertainty": result.uncertainty,
        "provenance": result.provenance,
    }


def presegment(
    image_path: str | Path,
    engine_name: str,
    out: str | Path,
    protocol: Protocol | None = None,
    structures: Sequence[str] | None = None,
    engine_options: dict | None = None,
    progress=None,
    cancel=None,
) -> dict:
    engine = get_engine(engine_name, **(engine_options or {}))
    image = read_image(image_path)
    result = engine.run(image, structures or None, progress=progress, cancel=cancel)
    summary = write_engine_result(out, image, engine, result, protocol)
    summary["image"] = str(image_path)
    summary["output"] = str(out)
    write_json(Path(str(out).removesuffix(".seg.nrrd") + ".presegment.json"), summary)
    return summary


def batch_inputs(folder: str | Path) -> list[Path]:
    """The images of a folder: image files, and sub-folders holding a DICOM series."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EngineError(f"{folder}: not a folder")
    found = []
    for entry in sorted(folder.iterdir()):
        name = entry.name.lower()
        image_file = entry.is_file() and name.endswith(IMAGE_SUFFIXES) and not name.endswith(".seg.nrrd")
        if image_file or entry.is_dir():
            found.append(entry)
    return found


def case_name(path: Path) -> str:
    name = path.name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name
