"""Checking uploaded images and segmentations before anything is stored or allocated.

Order matters: the file name, then the header (size refused before any voxel is read; NRRD headers that
point at another file on the server are refused), then the geometry against the case image, then the
full read and the segment names against the protocol. Every refusal is an ``ApiError`` that names the
problem and never the server's own paths.
"""

from __future__ import annotations

import gzip
import json
import math
import re
import struct
import zlib
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
DEFAULT_MAX_BYTES = 1024 * 1024 * 1024
# what a labelmap needs: Slicer writes 8-bit layers, 16 bits hold 65,535 labels
LABEL_PIXEL_TYPES = (
    "8-bit unsigned integer",
    "8-bit signed integer",
    "16-bit unsigned integer",
    "16-bit signed integer",
)
NIFTI1_HEADER_BYTES, NIFTI2_HEADER_BYTES = 348, 540


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


def header_geometry(
    path: Path, suffix: str, name: str, code: str, max_voxels: int, max_bytes: int
) -> tuple[Geometry, int, str]:
    """The grid, number of components and pixel type (SimpleITK's words) from the header alone; refuses
    absurd sizes, in voxels and in decompressed bytes, before any voxel is read."""
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
    sizes = [*reader.GetSize(), components]
    _check_voxels(sizes, name, max_voxels)
    pixel = sitk.GetPixelIDValueAsString(reader.GetPixelID()).removeprefix("vector of ")
    bits = re.search(r"(\d+)-bit", pixel)
    decompressed = math.prod(sizes) * (int(bits.group(1)) // 8 if bits else 8) * (2 if "complex" in pixel else 1)
    if decompressed > max_bytes:
        raise ApiError(
            422,
            "image_too_large",
            f"{name}: {decompressed} bytes once decompressed ({' x '.join(map(str, sizes))} of {pixel}) exceed the "
            f"limit of {max_bytes}",
            sizes=sizes,
            limit_bytes=max_bytes,
        )
    if len(reader.GetSize()) != 3:
        raise ApiError(422, code, f"{name}: expected a 3D image, got {len(reader.GetSize())} dimensions")
    return Geometry.of(reader), components, pixel


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


def check_image(path: Path, suffix: str, name: str, max_voxels: int, max_bytes: int = DEFAULT_MAX_BYTES) -> Geometry:
    """A case image: readable in full, 3D, scalar, within the size limits, its voxel data all there."""
    import SimpleITK as sitk

    geometry, components, _pixel = header_geometry(path, suffix, name, "invalid_image", max_voxels, max_bytes)
    if components != 1:
        raise ApiError(422, "invalid_image", f"{name}: expected a scalar image, got {components} components")
    if suffix.startswith(".nii"):
        check_nifti_data(path, name)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.Execute()
    except RuntimeError:
        raise ApiError(422, "invalid_image", f"{name}: the image data is truncated or corrupt") from None
    return geometry


def check_nifti_data(path: Path, name: str) -> None:
    """ITK reads a NIfTI whose gzip stream or data is cut short without complaint (the rest zero-filled):
    the whole stream is decompressed here, in chunks, and must hold every voxel the header declares."""
    opener = gzip.open if _is_gzip(path) else open
    total, header = 0, b""
    try:
        with opener(path, "rb") as stream:
            for chunk in iter(lambda: stream.read(CHUNK), b""):
                if len(header) < NIFTI2_HEADER_BYTES:
                    header += chunk[: NIFTI2_HEADER_BYTES - len(header)]
                total += len(chunk)
    except (OSError, EOFError, zlib.error):  # gzip.BadGzipFile is an OSError
        raise ApiError(422, "invalid_image", f"{name}: the gzip stream is truncated or corrupt") from None
    expected = _nifti_bytes(header)
    if expected is None:
        raise ApiError(422, "invalid_image", f"{name}: not a NIfTI-1 or NIfTI-2 header")
    if total < expected:
        raise ApiError(
            422,
            "invalid_image",
            f"{name}: truncated: {total} bytes of NIfTI data where the header declares {expected}",
        )


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


def _nifti_bytes(header: bytes) -> int | None:
    """Where a NIfTI-1 or NIfTI-2 file's voxel data ends: vox_offset + voxels x bitpix / 8; None if no header."""
    for order in "<>":
        size = struct.unpack(order + "i", header[:4])[0] if len(header) >= 4 else 0
        if size == NIFTI1_HEADER_BYTES and len(header) >= size:
            dims = struct.unpack(order + "8h", header[40:56])
            bitpix = struct.unpack(order + "h", header[72:74])[0]
            offset = int(struct.unpack(order + "f", header[108:112])[0])
        elif size == NIFTI2_HEADER_BYTES and len(header) >= size:
            bitpix = struct.unpack(order + "h", header[14:16])[0]
            dims = struct.unpack(order + "8q", header[16:80])
            offset = struct.unpack(order + "q", header[168:176])[0]
        else:
            continue
        if not 1 <= dims[0] <= 7 or bitpix <= 0:
            return None
        voxels = math.prod(max(extent, 1) for extent in dims[1 : dims[0] + 1])
        return max(offset, size) + voxels * bitpix // 8
    return None


def check_segmentation(
    path: Path,
    name: str,
    protocol: Protocol,
    geometry: Geometry | None,
    max_voxels: int,
    reader_name: str,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> ReaderLabels:
    """A reader's ``.seg.nrrd``: 8- or 16-bit labels, at most one layer per protocol structure, on the case
    image's grid, every segment a structure of the protocol."""
    found, layers, pixel = header_geometry(path, ".seg.nrrd", name, "invalid_segmentation", max_voxels, max_bytes)
    if pixel not in LABEL_PIXEL_TYPES:
        raise ApiError(
            422, "invalid_segmentation", f"{name}: {pixel} voxels; a labelmap is an 8- or 16-bit integer image"
        )
    if layers > len(protocol.structures):
        raise ApiError(
            422,
            "invalid_segmentation",
            f"{name}: {layers} layers, more than protocol {protocol.label}'s {len(protocol.structures)} structures",
        )
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
