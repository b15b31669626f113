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


def write_engine_result(path: str | Path, image, engine, result: EngineResult, protocol: Protocol | None) -> dict:
    """Write the result as a ``.seg.nrrd`` (structures named and coded by the protocol where their codes
    match, by the engine otherwise) with AI provenance tags; returns a per-structure summary."""
    info = engine.info()
    matched = match_protocol(info, protocol) if protocol is not None else {}
    geometry = Geometry.of(image)
    unit = float(np.prod(geometry.spacing)) / 1000.0
    segments, tags, summary = [], {}, {}
    for value, engine_id in sorted(result.names.items()):
        structure = matched.get(engine_id) or info.structure(engine_id).as_structure()
        segments.append((value, structure))
        tags[structure.id] = prov.provenance_tags(result.provenance, result.confidence.get(engine_id))
        summary[structure.name] = {
            "structure_id": structure.id,
            "engine_structure": engine_id,
            "volume_ml": round(int(np.count_nonzero(result.labels == value)) * unit, 3),
            "confidence": result.confidence.get(engine_id),
        }
    path = Path(path)
    if not path.name.endswith(".seg.nrrd"):
        raise EngineError(f"{path}: the output must be a .seg.nrrd file")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial.nrrd")
    write_seg_nrrd(partial, result.labels, geometry, segments, protocol, segment_tags=tags)
    partial.replace(path)  # nothing half-written under the final name
    return {"structures": summary, "uncertainty": result.uncertainty, "provenance": result.provenance}


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
