"""Readers' label files in, consensus files out, without Slicer: Slicer ``.seg.nrrd`` files and
NIfTI/NRRD labelmaps read and written with SimpleITK.

A reader is a set of named label layers on one image grid. A ``.seg.nrrd`` names its segments in its
header (``SegmentN_Name``, ``SegmentN_LabelValue``, ``SegmentN_Layer``, ``SegmentN_Tags``); a plain
labelmap needs a JSON map from label value to structure name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .protocol import Protocol, Structure
from .structure_names import match_name

STRUCTURE_TAG = "MedAnnotAssist.StructureId"


@dataclass(frozen=True)
class Geometry:
    """An image grid in ITK's LPS physical space; ``size`` and ``spacing`` in (i, j, k) order."""

    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]

    @classmethod
    def of(cls, image) -> Geometry:
        return cls(tuple(image.GetSize()), tuple(image.GetSpacing()), tuple(image.GetOrigin()), image.GetDirection())

    @property
    def array_spacing(self) -> tuple[float, ...]:
        """Spacing in numpy array axis order (k, j, i)."""
        return tuple(reversed(self.spacing))

    @property
    def voxel_count(self) -> int:
        return int(np.prod(self.size))

    def differences(self, other: Geometry, tolerance: float = 1e-4) -> list[str]:
        problems = []
        if self.size != other.size:
            problems.append(f"size {_fmt(other.size)} instead of {_fmt(self.size)}")
        for name in ("spacing", "origin", "direction"):
            mine, theirs = np.array(getattr(self, name)), np.array(getattr(other, name))
            if mine.shape != theirs.shape or not np.allclose(mine, theirs, atol=tolerance * max(self.spacing), rtol=0):
                problems.append(f"{name} {_fmt(theirs)} instead of {_fmt(mine)}")
        return problems

    @property
    def ijk_to_ras(self) -> np.ndarray:
        """Slicer's 4x4 IJK-to-RAS matrix of this grid."""
        lps_to_ras = np.diag([-1.0, -1.0, 1.0])
        n = len(self.spacing)
        direction = np.eye(3)
        direction[:n, :n] = np.asarray(self.direction, float).reshape(n, n)
        spacing = np.ones(3)
        spacing[:n] = self.spacing
        origin = np.zeros(3)
        origin[:n] = self.origin
        matrix = np.eye(4)
        matrix[:3, :3] = lps_to_ras @ direction @ np.diag(spacing)
        matrix[:3, 3] = lps_to_ras @ origin
        return matrix

    def slicer_geometry_string(self) -> str:
        """Slicer's serialized reference image geometry: the IJK-to-RAS matrix row by row, then the extent."""
        values = [f"{v:.17g}" for v in self.ijk_to_ras.ravel()]
        size = list(self.size) + [1] * (3 - len(self.size))
        values += [str(v) for s in size for v in (0, s - 1)]
        return ";".join(values) + ";"

    def apply(self, image) -> None:
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)


def _fmt(values) -> str:
    return " x ".join(f"{float(v):g}" for v in values)


@dataclass
class ReaderLabels:
    """One reader's segmentation: label layers (numpy, k j i) and where each structure lives in them."""

    name: str
    path: Path | None
    geometry: Geometry
    layers: list[np.ndarray]
    segments: dict[str, tuple[int, int]]  # protocol structure id -> (layer, label value)
    unmatched: list[str] = field(default_factory=list)  # segment names that are not in the protocol

    def mask(self, structure_id: str, box: tuple[slice, ...] | None = None) -> np.ndarray:
        """The structure's mask (cropped to ``box``); all False when the reader has no such segment."""
        shape = self.layers[0].shape if box is None else tuple(s.stop - s.start for s in box)
        if structure_id not in self.segments:
            return np.zeros(shape, bool)
        layer, value = self.segments[structure_id]
        labels = self.layers[layer] if box is None else self.layers[layer][box]
        return labels == value


def match_structure(protocol: Protocol, name: str, structure_id: str | None = None) -> Structure | None:
    """The protocol structure a segment stands for: by its StructureId tag, else by id, name or TG-263
    name ignoring case, else through the maintained name map (``portal_vein_and_splenic_vein``, ``Left Kidney``)."""
    if structure_id:
        for structure in protocol.structures:
            if structure.id == structure_id:
                return structure
    wanted = name.strip().casefold()
    for structure in protocol.structures:
        if wanted in {structure.id.casefold(), structure.name.casefold(), (structure.tg263 or "").casefold()}:
            return structure
    return match_name(protocol, name)[0]


def read_reader(
    path: str | Path, protocol: Protocol, label_names: dict[int, str] | None = None, name: str | None = None
) -> ReaderLabels:
    """Read a ``.seg.nrrd`` or a labelmap (NIfTI/NRRD with ``label_names``) and map it onto the protocol."""
    import SimpleITK as sitk

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
        pixel = sitk.GetPixelIDValueAsString(reader.GetPixelID())
        if "integer" not in pixel:  # refused from the header, before any voxel is decoded
            raise ValueError(f"{path}: expected integer labels, got {pixel.removeprefix('vector of ')} voxels")
        image = reader.Execute()
    except RuntimeError as exc:
        raise ValueError(f"{path}: cannot read as an image: {str(exc).strip().splitlines()[-1]}") from None
    keys = set(image.GetMetaDataKeys())
    geometry = Geometry.of(image)
    named = _seg_nrrd_segments(image, keys) if "Segment0_Name" in keys else None
    layers = _layers(image)
    del image  # the decoded file: from here only the layers are held
    if named is not None:
        pass
    elif label_names is not None:
        named = [(label, 0, value, None) for value, label in sorted(label_names.items())]
    else:
        raise ValueError(f"{path}: a labelmap needs a JSON map of label values to structure names (--labels-json)")
    segments, unmatched = {}, []
    for label, layer, value, structure_id in named:
        structure = match_structure(protocol, label, structure_id)
        if structure is None:
            unmatched.append(label)
        elif structure.id not in segments:
            segments[structure.id] = (layer, value)
    reader_name = name or path.name.removesuffix(".gz").removesuffix(".nii").removesuffix(".nrrd").removesuffix(".seg")
    return ReaderLabels(reader_name, path, geometry, layers, segments, unmatched)


def _layers(image) -> list[np.ndarray]:
    """The label layers (k j i) copied once out of the decoded image: its buffer is viewed, never copied
    whole, so reading holds at most twice the voxel data (a multi-layer file: one layer per component)."""
    import SimpleITK as sitk

    view = sitk.GetArrayViewFromImage(image)
    if image.GetNumberOfComponentsPerPixel() > 1:
        return [np.ascontiguousarray(view[..., index]) for index in range(view.shape[-1])]
    return [np.array(view)]


def _seg_nrrd_segments(image, keys) -> list[tuple[str, int, int, str | None]]:
    segments, index = [], 0
    while f"Segment{index}_Name" in keys:
        prefix = f"Segment{index}_"
        layer = int(image.GetMetaData(prefix + "Layer")) if prefix + "Layer" in keys else 0
        value = int(image.GetMetaData(prefix + "LabelValue")) if prefix + "LabelValue" in keys else 1
        tags = image.GetMetaData(prefix + "Tags") if prefix + "Tags" in keys else ""
        structure_id = None
        for tag in tags.split("|"):
            key, _, tag_value = tag.partition(":")
            if key == STRUCTURE_TAG:
                structure_id = tag_value
        segments.append((image.GetMetaData(prefix + "Name"), layer, value, structure_id))
        index += 1
    return segments


def check_same_grid(readers: list[ReaderLabels]) -> None:
    """Raise a ValueError naming the files when the readers are not on one image grid."""
    first = readers[0]
    problems = []
    for reader in readers[1:]:
        for difference in first.geometry.differences(reader.geometry):
            problems.append(f"{reader.path or reader.name}: {difference} (as in {first.path or first.name})")
    if problems:
        raise ValueError("the readers' segmentations are not on one image grid:\n  " + "\n  ".join(problems))


def write_volume(path: str | Path, array: np.ndarray, geometry: Geometry) -> Path:
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array)
    geometry.apply(image)
    sitk.WriteImage(image, str(path), useCompression=True)
    return Path(path)


def write_seg_nrrd(
    path: str | Path,
    labels: np.ndarray,
    geometry: Geometry,
    segments: list[tuple[int, Structure]],
    protocol: Protocol | None = None,
    extra_tags: dict[str, str] | None = None,
    segment_tags: dict[str, dict[str, str]] | None = None,
) -> Path:
    """Write a one-layer Slicer segmentation: ``segments`` are (label value, protocol structure);
    ``segment_tags`` adds tags to the segment of a structure id."""
    import SimpleITK as sitk

    from .terminology import to_slicer_string

    image = sitk.GetImageFromArray(labels.astype(np.uint8 if labels.max(initial=0) < 256 else np.uint16))
    geometry.apply(image)
    image.SetMetaData("Segmentation_MasterRepresentation", "Binary labelmap")
    image.SetMetaData("Segmentation_ContainedRepresentationNames", "Binary labelmap|")
    image.SetMetaData("Segmentation_ReferenceImageExtentOffset", "0 0 0")
    image.SetMetaData(
        "Segmentation_ConversionParameters", f"Reference image geometry|{geometry.slicer_geometry_string()}|&"
    )
    extent = " ".join(f"0 {size - 1}" for size in geometry.size)
    for index, (value, structure) in enumerate(segments):
        prefix = f"Segment{index}_"
        tags = {"TerminologyEntry": to_slicer_string(structure.terminology), STRUCTURE_TAG: structure.id}
        if protocol is not None:
            tags["MedAnnotAssist.Protocol"] = f"{protocol.id}@{protocol.version}"
            tags["MedAnnotAssist.ProtocolChecksum"] = protocol.checksum
        tags.update(extra_tags or {})
        tags.update((segment_tags or {}).get(structure.id, {}))
        values = {
            "ID": structure.id,
            "Name": structure.name,
            "NameAutoGenerated": "0",
            "Color": " ".join(f"{c:g}" for c in structure.color_rgb),
            "ColorAutoGenerated": "0",
            "LabelValue": str(value),
            "Layer": "0",
            "Extent": extent,
            "Tags": "".join(f"{key}:{tag}|" for key, tag in tags.items()),
        }
        for key, text in values.items():
            image.SetMetaData(prefix + key, text)
    sitk.WriteImage(image, str(path), useCompression=True)
    return Path(path)


def write_json(path: str | Path, data) -> Path:
    Path(path).write_text(json.dumps(data, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return Path(path)


def reoriented(reader: ReaderLabels, target: Geometry, tolerance: float = 1e-3) -> ReaderLabels:
    """The reader's layers on ``target`` when both grids hold the same voxels in another axis order or
    direction (a NIfTI from a DICOM series is often flipped): an exact permutation and flip, never an
    interpolation. A ValueError names the difference when the grids are not the same set of voxels."""
    source = reader.geometry
    if len(source.size) != 3 or len(target.size) != 3:
        if source.differences(target):
            raise ValueError(f"{reader.path or reader.name}: {'; '.join(target.differences(source))}")
        return reader
    source_axes = np.asarray(source.direction, float).reshape(3, 3) * np.asarray(source.spacing)
    target_axes = np.asarray(target.direction, float).reshape(3, 3) * np.asarray(target.spacing)
    # target step along axis t, in source index units: a signed unit vector when the grids match
    steps = np.linalg.solve(source_axes, target_axes)
    start = np.linalg.solve(source_axes, np.asarray(target.origin, float) - np.asarray(source.origin, float))
    rounded_steps, rounded_start = np.round(steps), np.round(start)
    permutation = np.abs(rounded_steps).argmax(axis=0)  # source axis for each target axis
    exact = (
        np.allclose(steps, rounded_steps, atol=tolerance)
        and np.allclose(start, rounded_start, atol=tolerance)
        and sorted(permutation.tolist()) == [0, 1, 2]
        and np.all(np.abs(rounded_steps).sum(axis=0) == 1)
    )
    if exact:
        signs = rounded_steps[permutation, [0, 1, 2]]
        ends = rounded_start[permutation] + signs * (np.asarray(target.size) - 1)
        sizes = np.asarray(source.size)[permutation]
        exact = bool(np.all(np.minimum(rounded_start[permutation], ends) >= 0)) and bool(
            np.all(np.maximum(rounded_start[permutation], ends) <= sizes - 1)
        )
    if not exact:
        raise ValueError(
            f"{reader.path or reader.name}: the labels are not on the image's voxel grid "
            f"({'; '.join(target.differences(source)) or 'different grid'}); resample them onto the image first"
        )
    slices, axes = [], []
    for t in range(3):  # numpy axes are (k, j, i): target axis t is numpy axis 2 - t
        s, sign, first = int(permutation[t]), int(signs[t]), int(rounded_start[permutation[t]])
        stop = first + sign * int(target.size[t])
        slices.append(slice(first, None if stop < 0 else stop, sign))
        axes.append(2 - s)
    # numpy axis order of the result: target k, j, i
    order = [axes[2], axes[1], axes[0]]
    index = [slice(None)] * 3
    for t in range(3):
        index[2 - int(permutation[t])] = slices[t]
    layers = [np.ascontiguousarray(np.transpose(layer[tuple(index)], order)) for layer in reader.layers]
    return ReaderLabels(reader.name, reader.path, target, layers, dict(reader.segments), list(reader.unmatched))
