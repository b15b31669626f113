"""Checking uploaded images and segmentations before anything is stored or allocated.

Order matters: the file name, then the header (size refused before any voxel is read; NRRD headers that
point at another file on the server are refused), then the geometry against the case image, then the
full read and the segment names against the protocol. Every refusal is an ``ApiError`` that names the
problem and never the server's own paths.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from fastapi import UploadFile

from MedAnnotAssistLib.core.labelio import Geometry, ReaderLabels, read_reader
from MedAnnotAssistLib.core.protocol import Protocol

from .blobs import CHUNK, BlobStore
from .errors import ApiError

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd")
SEGMENTATION_SUFFIXES = (".seg.nrrd", ".nrrd")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._ ()+-]{0,199}$")
_NRRD_MAGIC = re.compile(rb"^NRRD000[1-5]\r?\n")
NRRD_HEADER_LIMIT = 1024 * 1024
NRRD_ENCODINGS = {"raw", "gzip", "gz"}


def checked_filename(filename: str | None, suffixes: tuple[str, ...], field: str) -> tuple[str, str]:
    """(file name, suffix) of a multipart file part; a path-like or unexpected name is refused."""
    if not filename:
        raise ApiError(400, "bad_filename", f"{field}: the file part has no file name")
    if "/" in filename or "\\" in filename or "\x00" in filename or ".." in filename or not _SAFE_NAME.match(filename):
        raise ApiError(
            400,
            "bad_filename",
            f"{field}: the file name must be a plain name (letters, digits, . _ - space), not a path",
            filename=filename[:200].encode("ascii", "replace").decode(),
        )
    lowered = filename.lower()
    for suffix in suffixes:
        if lowered.endswith(suffix):
            return filename, suffix
    raise ApiError(
        415,
        "unsupported_file_type",
        f"{field}: {filename} is not one of {', '.join(suffixes)}",
        expected=list(suffixes),
    )


def receive(store: BlobStore, upload: UploadFile, suffix: str, limit: int) -> tuple[Path, str, int]:
    """Stream a multipart file part into a temporary file of the blob store: (path, sha256, size)."""
    upload.file.seek(0)
    try:
        return store.write_stream(iter(lambda: upload.file.read(CHUNK), b""), suffix, limit)
    except ValueError as error:
        raise ApiError(413, "upload_too_large", f"{upload.filename}: {error}", limit_bytes=limit) from None


def geometry_json(geometry: Geometry) -> str:
    return json.dumps(
        {
            "size": list(geometry.size),
            "spacing": list(geometry.spacing),
            "origin": list(geometry.origin),
            "direction": list(geometry.direction),
        }
    )


def geometry_from_json(text: str) -> Geometry:
    data = json.loads(text)
    return Geometry(tuple(data["size"]), tuple(data["spacing"]), tuple(data["origin"]), tuple(data["direction"]))


def nrrd_header(path: Path, name: str, code: str) -> dict[str, str]:
    """The NRRD header fields (lower-case keys); refuses detached data and unknown encodings."""
    with open(path, "rb") as handle:
        head = handle.read(NRRD_HEADER_LIMIT)
    if not _NRRD_MAGIC.match(head):
        raise ApiError(422, code, f"{name}: not a NRRD file (no NRRD magic line)")
    end = min((i for i in (head.find(b"\n\n"), head.find(b"\r\n\r\n")) if i >= 0), default=-1)
    if end < 0:
        raise ApiError(422, code, f"{name}: the NRRD header is truncated or longer than {NRRD_HEADER_LIMIT} bytes")
    fields = {}
    for raw in head[:end].decode("latin-1").splitlines()[1:]:
        if raw.startswith("#") or ":" not in raw:
            continue
        key, _, value = raw.partition(":")
        fields[key.strip().lower()] = value.lstrip("=").strip()
    if "data file" in fields or "datafile" in fields:
        raise ApiError(422, code, f"{name}: detached NRRD data ('data file') is not accepted; send one attached file")
    encoding = fields.get("encoding", "").lower()
    if encoding not in NRRD_ENCODINGS:
        raise ApiError(422, code, f"{name}: NRRD encoding {encoding or '(none)'!r} is not one of raw, gzip")
    return fields


def header_geometry(path: Path, suffix: str, name: str, code: str, max_voxels: int) -> tuple[Geometry, int]:
    """The grid and number of components from the header alone; refuses absurd sizes before reading."""
    import SimpleITK as sitk

    if suffix.endswith(".nrrd"):
        fields = nrrd_header(path, name, code)
        try:
            sizes = [int(v) for v in fields.get("sizes", "").split()]
        except ValueError:
            raise ApiError(422, code, f"{name}: the NRRD 'sizes' field is not a list of integers") from None
        _check_voxels(sizes, name, max_voxels)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise ApiError(422, code, f"{name}: the image header cannot be read") from None
    components = reader.GetNumberOfComponents()
    _check_voxels([*reader.GetSize(), components], name, max_voxels)
    if len(reader.GetSize()) != 3:
        raise ApiError(422, code, f"{name}: expected a 3D image, got {len(reader.GetSize())} dimensions")
    return Geometry.of(reader), components


def _check_voxels(sizes, name: str, max_voxels: int) -> None:
    total = 1
    for size in sizes:
        if size <= 0:
            raise ApiError(422, "image_too_large", f"{name}: image size {sizes} has an empty axis")
        total *= size
    if total > max_voxels:
        raise ApiError(
            422, "image_too_large", f"{name}: {total} voxels ({sizes}) exceed the limit of {max_voxels}", sizes=sizes
        )


def check_image(path: Path, suffix: str, name: str, max_voxels: int) -> Geometry:
    """A case image: readable in full, 3D, scalar, within the size limit."""
    import SimpleITK as sitk

    geometry, components = header_geometry(path, suffix, name, "invalid_image", max_voxels)
    if components != 1:
        raise ApiError(422, "invalid_image", f"{name}: expected a scalar image, got {components} components")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.Execute()
    except RuntimeError:
        raise ApiError(422, "invalid_image", f"{name}: the image data is truncated or corrupt") from None
    return geometry


def check_segmentation(
    path: Path, name: str, protocol: Protocol, geometry: Geometry | None, max_voxels: int, reader_name: str
) -> ReaderLabels:
    """A reader's ``.seg.nrrd``: on the case image's grid, every segment a structure of the protocol."""
    found, _components = header_geometry(path, ".seg.nrrd", name, "invalid_segmentation", max_voxels)
    if "segment0_name" not in nrrd_header(path, name, "invalid_segmentation"):
        raise ApiError(
            422, "invalid_segmentation", f"{name}: no segments in the header (Segment0_Name): not a .seg.nrrd"
        )
    if geometry is not None:
        problems = geometry.differences(found)
        if problems:
            raise ApiError(
                422,
                "geometry_mismatch",
                f"{name}: not on the case image's grid: {'; '.join(problems)}",
                problems=problems,
            )
    try:
        labels = read_reader(path, protocol, name=reader_name)
    except (ValueError, RuntimeError) as error:
        message = str(error).replace(str(path), name)
        raise ApiError(422, "invalid_segmentation", f"{name}: {message.removeprefix(name + ': ')}") from None
    if labels.unmatched:
        raise ApiError(
            422,
            "unknown_segment",
            f"{name}: segments not in protocol {protocol.label}: {', '.join(labels.unmatched)}",
            segments=labels.unmatched,
            known=[s.id for s in protocol.structures],
        )
    return labels
