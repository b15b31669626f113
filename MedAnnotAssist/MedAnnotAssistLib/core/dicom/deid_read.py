"""Reading a file for de-identification: a DICOM file, or a bare data set as old files were written; a file cut
short is an error (pydicom reads one silently), so nothing half-read is de-identified and passed on."""

from __future__ import annotations

import warnings
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from MedAnnotAssistLib.core.dicom import DicomError


def read_for_deid(path: Path) -> Dataset:
    """The data set of ``path``; DicomError when it is not DICOM, cannot be read or is cut short."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(path)
    except InvalidDicomError:
        return _read_bare(path)  # no DICM preamble: maybe a bare data set, as old files were written
    except Exception as error:
        raise DicomError(f"{path.name}: unreadable DICOM ({type(error).__name__}: {error})") from error
    eof = [str(w.message) for w in caught if "end of file" in str(w.message).lower() or "eof" in str(w.message).lower()]
    if eof:
        raise DicomError(f"{path.name}: truncated DICOM ({eof[0]})")
    _check_complete(ds, path)
    return ds


def _read_bare(path: Path) -> Dataset:
    try:
        ds = pydicom.dcmread(path, force=True)
        tags = list(ds.keys())
        # a real bare data set starts in a low standard group and has several attributes
        if len(tags) >= 3 and (tags[0] >> 16) in (0x0002, 0x0008) and "SOPClassUID" in ds:
            _check_complete(ds, path)
            return ds
    except DicomError:
        raise
    except Exception:
        pass
    raise DicomError(f"{path.name}: not a DICOM file")


def _check_complete(ds: Dataset, path: Path) -> None:
    """pydicom reads a cut-off file without complaint: the last element must end where the file ends."""
    if not len(ds):
        raise DicomError(f"{path.name}: truncated DICOM (no data set after the file meta information)")
    last = ds.get_item(max(ds.keys()))
    length, value, tell = getattr(last, "length", None), getattr(last, "value", None), getattr(last, "value_tell", None)
    if length is None or length == 0xFFFFFFFF or value is None or tell is None:
        return  # undefined length: pydicom warns when the delimiter is missing
    size = path.stat().st_size
    if len(value) < length:
        raise DicomError(f"{path.name}: truncated DICOM (element {last.tag} has {len(value)} of its {length} bytes)")
    if tell + length < size:
        left = size - tell - length
        raise DicomError(f"{path.name}: truncated DICOM (the file ends inside an element header, {left} bytes left)")
