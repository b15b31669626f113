"""A folder (or zip) of DICOM files in, one SimpleITK image per series out, with geometry checks.

Slices are read with pydicom (compressed transfer syntaxes such as JPEG 2000 and JPEG through the
pylibjpeg plugins), sorted along the slice normal, checked and stacked into an LPS image. A problem
that would give a wrong image (a missing slice, uneven or duplicate positions, gantry tilt, two
orientations, mixed sizes) is an error that names the files; files that are not DICOM are skipped
and reported.
"""

from __future__ import annotations

import warnings
import zipfile
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

import numpy as np

from ..jobs import check_cancel
from . import DicomError

# positions within this fraction of the slice gap count as even (DICOM positions carry ~6 digits)
SPACING_TOLERANCE = 0.01
# the slice stack may lean this many degrees off the slice normal before it counts as gantry tilt
TILT_TOLERANCE_DEG = 0.1


@dataclass
class DicomSeries:
    """One series: its image (LPS, SimpleITK), the slices' headers in stacking order and what was noticed."""

    series_uid: str
    study_uid: str
    modality: str
    image: object  # SimpleITK.Image
    datasets: list  # pydicom Datasets in slice order, pixel data included
    sources: list[str]  # file (or zip member) of each dataset
    warnings: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, why) for files that were not used

    @property
    def slice_count(self) -> int:
        return len(self.datasets)


@dataclass
class _Slice:
    source: str
    dataset: object


def _iter_sources(path: Path) -> Iterator[tuple[str, Callable[[], object]]]:
    """(name, opener) for every file under a folder or in a zip archive."""
    if path.is_file() and zipfile.is_zipfile(path):
        archive = zipfile.ZipFile(path)
        for info in sorted(archive.infolist(), key=lambda i: i.filename):
            if not info.is_dir():
                yield f"{path}:{info.filename}", lambda info=info: BytesIO(archive.read(info))
    elif path.is_dir():
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            yield str(file), lambda file=file: str(file)
    elif path.is_file():
        yield str(path), lambda: str(path)
    else:
        raise DicomError(f"{path}: no such file or folder")


def read_datasets(path: str | Path, cancel=None, progress=None) -> tuple[list[_Slice], list[tuple[str, str]]]:
    """Every DICOM file under ``path`` (folder, zip or file) with its pixel data, and the files skipped."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    slices, skipped = [], []
    sources = list(_iter_sources(Path(path)))
    for number, (name, opener) in enumerate(sources):
        check_cancel(cancel)
        if progress:
            progress(number / len(sources), f"reading file {number + 1} of {len(sources)}")
        try:
            with warnings.catch_warnings(record=True) as noticed:
                warnings.simplefilter("always")
                dataset = _read_dicom(opener, pydicom, InvalidDicomError)
        except InvalidDicomError:
            skipped.append((name, "not a DICOM file (no DICM preamble or recognisable header)"))
            continue
        except Exception as exc:  # pydicom raises many types on damaged files
            raise DicomError(f"{name}: cannot read this DICOM file ({type(exc).__name__}: {exc})") from None
        # pydicom reads a cut-off file without raising: it warns and drops the element it was in
        ended = [str(w.message) for w in noticed if "end of file" in str(w.message).lower()]
        if ended or ("Rows" in dataset and not _has_pixels(dataset)):
            why = ended[0] if ended else "it has Rows/Columns but no pixel data"
            raise DicomError(f"{name}: the file is truncated or damaged ({why})")
        if "SeriesInstanceUID" not in dataset:
            skipped.append((name, "not an image (no SeriesInstanceUID)"))
            continue
        slices.append(_Slice(name, dataset))
    return slices, skipped


def _read_dicom(opener, pydicom, invalid):
    """A file with the DICM preamble, or an older one without it that still holds a SOP Class UID."""
    try:
        return pydicom.dcmread(opener())
    except invalid:
        try:
            dataset = pydicom.dcmread(opener(), force=True)
            if "SOPClassUID" in dataset and "SOPInstanceUID" in dataset:
                return dataset
        except Exception:  # a forced read of a non-DICOM file fails in arbitrary ways
            pass
        raise


def _has_pixels(dataset) -> bool:
    return any(k in dataset for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))


def read_all_series(path: str | Path, progress=None, cancel=None) -> list[DicomSeries]:
    """Every image series under ``path``, largest first. Series that are not images (SEG, RTSTRUCT,
    reports) are reported in ``skipped`` of the first series. ``progress``: reading the files is the first
    30 % of it, decoding the slices the rest."""
    report = progress or (lambda fraction, message: None)
    slices, skipped = read_datasets(path, cancel, lambda f, m: report(0.3 * f, m))
    groups: dict[str, list[_Slice]] = defaultdict(list)
    for item in slices:
        if not _has_pixels(item.dataset):
            skipped.append((item.source, f"no pixel data ({item.dataset.get('Modality', '?')} object)"))
        else:
            groups[str(item.dataset.SeriesInstanceUID)].append(item)
    if not groups:
        found = f"; skipped: {_list(skipped)}" if skipped else ""
        raise DicomError(f"{path}: no DICOM image series found{found}")
    series, total, done = [], len(slices), 0
    for number, items in enumerate(sorted(groups.values(), key=len, reverse=True)):
        check_cancel(cancel)

        def decoded(count: int, first=done) -> None:
            report(0.3 + 0.7 * (first + count) / total, f"decoding slice {first + count} of {total}")

        series.append(_build(items, [] if number else skipped, decoded))
        done += len(items)
    report(1.0, f"{len(series)} series")
    return series


def read_series(path: str | Path, series_uid: str | None = None, progress=None, cancel=None) -> DicomSeries:
    """The one image series under ``path`` (or the one with ``series_uid``)."""
    found = read_all_series(path, progress, cancel)
    if series_uid is not None:
        for series in found:
            if series.series_uid == series_uid:
                return series
        raise DicomError(f"{path}: no series with SeriesInstanceUID {series_uid}")
    if len(found) > 1:
        described = "; ".join(f"{s.series_uid} ({s.modality}, {s.slice_count} files)" for s in found)
        raise DicomError(f"{path}: {len(found)} image series found, choose one: {described}")
    return found[0]


def series_from_datasets(datasets: Iterable, source: str = "<datasets>") -> DicomSeries:
    """An image from datasets already in memory (e.g. retrieved by WADO-RS); all of one series."""
    items = [_Slice(f"{source}#{index}", ds) for index, ds in enumerate(datasets)]
    if not items:
        raise DicomError(f"{source}: no datasets")
    uids = {str(item.dataset.get("SeriesInstanceUID", "")) for item in items}
    if len(uids) > 1:
        raise DicomError(f"{source}: datasets from {len(uids)} series: {', '.join(sorted(uids))}")
    return _build(items, [])


def _list(pairs: list[tuple[str, str]], limit: int = 5) -> str:
    shown = ", ".join(f"{name} ({why})" for name, why in pairs[:limit])
    return shown + (f" and {len(pairs) - limit} more" if len(pairs) > limit else "")


def _vector(dataset, keyword: str, length: int, source: str) -> np.ndarray:
    value = dataset.get(keyword)
    if value is None or len(value) != length:
        raise DicomError(f"{source}: {keyword} is missing or does not hold {length} numbers")
    return np.asarray([float(v) for v in value])


def _build(items: list[_Slice], skipped: list[tuple[str, str]], decoded=None) -> DicomSeries:
    first = items[0].dataset
    name = f"series {first.SeriesInstanceUID}"
    if int(first.get("NumberOfFrames", 1) or 1) > 1:
        raise DicomError(f"{items[0].source}: multi-frame (enhanced) images are not supported yet; use classic slices")
    notes: list[str] = []
    _check_same(items, ("Rows", "Columns"), name, "image size")
    _check_same(items, ("PixelSpacing",), name, "pixel spacing", numeric=True)
    _check_same(items, ("SamplesPerPixel",), name, "samples per pixel")
    if len(items) == 1 and "ImageOrientationPatient" not in first:
        directions, positions = np.eye(3), [np.zeros(3)]
        notes.append(f"{items[0].source}: no ImageOrientationPatient/ImagePositionPatient; identity geometry used")
    else:
        directions, positions, items = _sort_and_check(items, name)
    row_spacing, column_spacing = (float(v) for v in first.get("PixelSpacing", [1.0, 1.0]))
    if len(items) > 1:
        gaps = np.diff([float(np.dot(p, directions[:, 2])) for p in positions])
        slice_spacing = float(np.mean(gaps))
    else:
        slice_spacing = float(first.get("SpacingBetweenSlices", first.get("SliceThickness", 1.0)) or 1.0)
    array = _stack_pixels(items, decoded)
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array, isVector=array.ndim == 4)
    image.SetSpacing((column_spacing, row_spacing, slice_spacing))
    image.SetOrigin(tuple(float(v) for v in positions[0]))
    image.SetDirection(tuple(float(v) for v in directions.ravel()))
    return DicomSeries(
        series_uid=str(first.SeriesInstanceUID),
        study_uid=str(first.get("StudyInstanceUID", "")),
        modality=str(first.get("Modality", "")),
        image=image,
        datasets=[item.dataset for item in items],
        sources=[item.source for item in items],
        warnings=notes,
        skipped=skipped,
    )


def _check_same(items: list[_Slice], keywords: tuple[str, ...], name: str, what: str, numeric=False) -> None:
    def key(ds):
        values = tuple(ds.get(k) for k in keywords)
        if numeric:
            return tuple(tuple(round(float(v), 4) for v in value) if value is not None else None for value in values)
        return tuple(str(v) for v in values)

    seen: dict[tuple, str] = {}
    for item in items:
        seen.setdefault(key(item.dataset), item.source)
    if len(seen) > 1:
        examples = "; ".join(f"{'/'.join(map(str, k))} in {source}" for k, source in seen.items())
        raise DicomError(f"{name}: the files do not share one {what}: {examples}")


def _sort_and_check(items: list[_Slice], name: str) -> tuple[np.ndarray, list[np.ndarray], list[_Slice]]:
    orientations: dict[tuple, list[str]] = defaultdict(list)
    for item in items:
        iop = _vector(item.dataset, "ImageOrientationPatient", 6, item.source)
        orientations[tuple(np.round(iop, 4))].append(item.source)
    if len(orientations) > 1:
        described = "; ".join(f"{list(k)} in {len(v)} file(s), e.g. {v[0]}" for k, v in orientations.items())
        raise DicomError(f"{name}: {len(orientations)} slice orientations in one series ({described})")
    iop = np.asarray(next(iter(orientations)), float)
    row, column = iop[:3] / np.linalg.norm(iop[:3]), iop[3:] / np.linalg.norm(iop[3:])
    normal = np.cross(row, column)
    located = [(float(np.dot(_vector(i.dataset, "ImagePositionPatient", 3, i.source), normal)), i) for i in items]
    located.sort(key=lambda pair: pair[0])
    items = [item for _, item in located]
    positions = [_vector(item.dataset, "ImagePositionPatient", 3, item.source) for item in items]
    directions = np.column_stack([row, column, normal])
    if len(items) < 2:
        return directions, positions, items
    distances = np.array([d for d, _ in located])
    gaps = np.diff(distances)
    for index, gap in enumerate(gaps):
        if gap < 1e-3:
            raise DicomError(
                f"{name}: two slices at the same position {distances[index]:.3f} mm: "
                f"{items[index].source} and {items[index + 1].source}"
            )
    expected = float(np.median(gaps))
    for index, gap in enumerate(gaps):
        if abs(gap - expected) > SPACING_TOLERANCE * expected:
            missing = round(gap / expected) - 1
            between = f"between {items[index].source} and {items[index + 1].source}"
            if missing >= 1 and abs(gap - (missing + 1) * expected) <= SPACING_TOLERANCE * expected:
                raise DicomError(
                    f"{name}: {missing} slice(s) missing {between} (gap {gap:.3f} mm, the other slices are "
                    f"{expected:.3f} mm apart)"
                )
            raise DicomError(f"{name}: uneven slice spacing {between} (gap {gap:.3f} mm instead of {expected:.3f} mm)")
    stack = positions[-1] - positions[0]
    angle = np.degrees(np.arccos(min(1.0, abs(float(np.dot(stack, normal))) / float(np.linalg.norm(stack)))))
    if angle > TILT_TOLERANCE_DEG:
        tilt = items[0].dataset.get("GantryDetectorTilt")
        told = f", GantryDetectorTilt {tilt}" if tilt is not None else ""
        raise DicomError(
            f"{name}: the slices are stacked {angle:.2f} degrees off their normal (gantry tilt{told}), from "
            f"{items[0].source} to {items[-1].source}; resample the series to an orthogonal grid first"
        )
    return directions, positions, items


def _stack_pixels(items: list[_Slice], decoded=None) -> np.ndarray:
    """The slices' stored values with each slice's rescale applied; integers stay integers.
    ``decoded(count)`` hears how many slices are done."""
    slopes = [float(item.dataset.get("RescaleSlope", 1) or 1) for item in items]
    intercepts = [float(item.dataset.get("RescaleIntercept", 0) or 0) for item in items]
    integral = all(s.is_integer() for s in slopes) and all(i.is_integer() for i in intercepts)
    planes = []
    for item, slope, intercept in zip(items, slopes, intercepts, strict=True):
        try:
            pixels = item.dataset.pixel_array
        except Exception as exc:
            syntax = item.dataset.file_meta.get("TransferSyntaxUID", "?") if "file_meta" in item.dataset else "?"
            raise DicomError(f"{item.source}: cannot decode pixel data (transfer syntax {syntax}): {exc}") from None
        if slope != 1 or intercept != 0:
            pixels = pixels.astype(np.float64) * slope + intercept
        planes.append(pixels)
        if decoded:
            decoded(len(planes))
    array = np.stack(planes)
    if integral:
        low, high = float(array.min()), float(array.max())
        for dtype in (np.int16, np.int32):
            if np.iinfo(dtype).min <= low and high <= np.iinfo(dtype).max:
                return array.astype(dtype, copy=False)
        return array.astype(np.float64)
    return array.astype(np.float32)
