"""A DICOM series uploaded as a zip becomes a case image: de-identified on ingest, checked, one NRRD volume.

Nothing identifying is kept: the zip is unpacked into a private temporary folder under flattened names (a
member's path is never used), every file is de-identified with the project's key (PS3.15 Basic Profile,
Retain Longitudinal Temporal Information with Modified Dates, ``core.dicom.deid``), the de-identified
files are read as one series with its geometry checks (``core.dicom.series``), and only the volume is
stored. A file at risk of burned-in identifiers refuses the whole upload with the reasons: nothing is
stored, nothing is passed silently. The temporary folder is removed in every case.
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
import zipfile
import zlib
from pathlib import Path

import SimpleITK as sitk
from fastapi import UploadFile

from MedAnnotAssistLib.core.dicom import DicomError
from MedAnnotAssistLib.core.dicom.deid import Deidentifier, deidentify_folder, read_or_create_project_key
from MedAnnotAssistLib.core.dicom.series import read_series

from .auth import Caller
from .blobs import sha256_of
from .cases import store_received_image
from .errors import ApiError
from .services import Services
from .uploads import checked_filename, receive

# a zip bomb is refused before it is unpacked: members and unpacked bytes are bounded
MAX_MEMBERS = 20_000
UNPACKED_FACTOR = 4
# the smallest DICOM file: a bare data set of three short elements (a Part 10 file has a 132-byte preamble)
MIN_DICOM_BYTES = 32
_END_OF_DIRECTORY = struct.Struct("<4s4H2LH")  # PK\x05\x06 ... entries, directory size and offset
_ZIP64_LOCATOR = struct.Struct("<4sLQL")  # PK\x06\x07: where the ZIP64 end record is
_ZIP64_END = struct.Struct("<4sQ2H2L4Q")  # PK\x06\x06 ... entries (64-bit)
_DIRECTORY_ENTRY = struct.Struct("<4s6H3L5H2L")  # PK\x01\x02 ... name, extra and comment lengths at 10-12


def project_key(services: Services, project_id: int) -> str:
    """The project's de-identification key: created once (owner-only file in the data directory), then
    reused, so the same patient and UIDs map to the same pseudonyms in every later upload."""
    path = services.settings.data_dir / "deid-keys" / f"project-{project_id}.key"
    try:
        return read_or_create_project_key(path)
    except FileExistsError:  # another replica created it a moment ago
        return read_or_create_project_key(path)


def count_members(archive: Path, limit: int) -> int:
    """The archive's entries, counted from its end record and then its central directory, before Python's
    zipfile builds an object per entry; 413 past ``limit``, 415 when it is not a zip."""
    not_zip = ApiError(415, "unsupported_file_type", "series: not a zip archive of DICOM files")
    with open(archive, "rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        tail_start = max(0, size - _END_OF_DIRECTORY.size - 0xFFFF)
        handle.seek(tail_start)
        tail = handle.read()
        end = tail.rfind(b"PK\x05\x06")
        if end < 0 or len(tail) - end < _END_OF_DIRECTORY.size:
            raise not_zip
        entries, directory_size = _END_OF_DIRECTORY.unpack_from(tail, end)[4:6]
        directory_end = tail_start + end  # the directory ends where the end record (or the ZIP64 one) starts
        if (
            end >= _ZIP64_LOCATOR.size
            and tail[end - _ZIP64_LOCATOR.size : end - _ZIP64_LOCATOR.size + 4] == b"PK\x06\x07"
        ):
            directory_end -= _ZIP64_LOCATOR.size + _ZIP64_END.size
            handle.seek(max(0, directory_end))
            zip64 = handle.read(_ZIP64_END.size)
            if len(zip64) < _ZIP64_END.size or zip64[:4] != b"PK\x06\x06":
                raise not_zip
            entries, directory_size = _ZIP64_END.unpack(zip64)[7:9]
        if entries > limit:
            raise _too_many(entries, limit)
        # the end record's count may lie: walk the directory itself, stopping past the limit
        handle.seek(max(0, directory_end - directory_size))
        counted, position = 0, 0
        while position + _DIRECTORY_ENTRY.size <= directory_size:
            entry = handle.read(_DIRECTORY_ENTRY.size)
            if len(entry) < _DIRECTORY_ENTRY.size or entry[:4] != b"PK\x01\x02":
                break
            skip = sum(_DIRECTORY_ENTRY.unpack(entry)[10:13])
            handle.seek(skip, os.SEEK_CUR)
            position += _DIRECTORY_ENTRY.size + skip
            counted += 1
            if counted > limit:
                raise _too_many(counted, limit)
    return counted


def _too_many(count: int, limit: int) -> ApiError:
    return ApiError(413, "upload_too_large", f"series: {count} files or more in the archive, over the limit of {limit}")


def _unpack(archive: Path, folder: Path, limit: int) -> tuple[dict[str, str], list[dict]]:
    """Members into ``folder`` as 00000.dcm, 00001.dcm, ...: (flattened name -> member name, skipped members).
    Members too small to be DICOM are skipped unread: unpacking and parsing thousands of them took seconds."""
    count_members(archive, MAX_MEMBERS)
    try:
        zipped = zipfile.ZipFile(archive)
    except zipfile.BadZipFile:
        raise ApiError(415, "unsupported_file_type", "series: not a zip archive of DICOM files") from None
    with zipped:
        members = [info for info in zipped.infolist() if not info.is_dir()]
        if not members:
            raise ApiError(422, "no_dicom", "series: the zip archive is empty")
        if len(members) > MAX_MEMBERS:
            raise _too_many(len(members), MAX_MEMBERS)
        unpacked = sum(info.file_size for info in members)
        if unpacked > limit:
            message = f"series: {unpacked} bytes once unpacked, over the limit of {limit}"
            raise ApiError(413, "upload_too_large", message, limit_bytes=limit)
        names, skipped = {}, []
        for index, info in enumerate(members):
            if info.file_size < MIN_DICOM_BYTES:
                skipped.append({"file": info.filename, "reason": f"not a DICOM file ({info.file_size} bytes)"})
                continue
            name = f"{index:05d}.dcm"
            try:
                with zipped.open(info) as source, open(folder / name, "wb") as target:
                    shutil.copyfileobj(source, target, 1024 * 1024)
            except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as error:
                # damaged, encrypted or an unsupported compression method
                raise ApiError(422, "bad_dicom", f"series: cannot unpack {info.filename}: {error}") from None
            names[name] = info.filename
        return names, skipped


def ingest_dicom_series(services: Services, caller: Caller, project_id: int, upload: UploadFile) -> tuple[dict, dict]:
    """(stored image, de-identification summary for the answer) of a zipped DICOM series."""
    filename, _ = checked_filename(upload.filename, (".zip",), "series")
    limit = services.settings.max_upload_bytes
    archive, _, _ = receive(services.blobs, upload, ".zip", limit)
    work = Path(tempfile.mkdtemp(dir=services.blobs.tmp, prefix="dicom-"))
    try:
        received, deidentified = work / "received", work / "deidentified"
        received.mkdir()
        names, skipped = _unpack(archive, received, UNPACKED_FACTOR * limit)
        archive.unlink(missing_ok=True)
        deidentifier = Deidentifier(project_key(services, project_id), retain_dates_shifted=True)
        try:
            summary = deidentify_folder(received, deidentified, deidentifier)
        except DicomError as error:
            raise ApiError(422, "bad_dicom", f"series: {str(error).replace(str(work), '')}") from None
        if summary.flagged:
            flagged = [{"file": names.get(note.file, note.file), "reason": note.reason} for note in summary.flagged]
            raise ApiError(
                422,
                "deid_review_needed",
                f"series: {len(flagged)} file(s) may show identifying text burned into the pixels; nothing was "
                "stored. De-identify and review them on the workstation (medannot deid), then upload the volume",
                files=flagged,
            )
        skipped += [{"file": names.get(note.file, note.file), "reason": note.reason} for note in summary.skipped]
        if summary.files_written == 0:
            raise ApiError(422, "no_dicom", "series: no DICOM image file in the archive", files=skipped[:50])
        try:
            series = read_series(deidentified)
        except DicomError as error:  # paths inside the message are the de-identified names in our folder
            raise ApiError(422, "bad_dicom_series", str(error).replace(f"{deidentified}{os.sep}", "")) from None
        volume = work / "volume.nrrd"  # in the work folder: removed with it if anything below fails
        sitk.WriteImage(series.image, str(volume), useCompression=True)
        sha256, size = sha256_of(volume), volume.stat().st_size
        note = {
            "source": "dicom",
            "modality": series.modality,
            "slices": series.slice_count,
            "deidentification": f"DICOM PS3.15 {summary.table_edition} Basic Profile, {', '.join(summary.options)}",
        }
        image = store_received_image(
            services, caller, volume, sha256, size, ".nrrd", f"{filename}.nrrd", note, project_id=project_id
        )
        answer = {
            "table_edition": summary.table_edition,
            "options": summary.options,
            "files_read": summary.files_read,
            "files_used": series.slice_count,
            "skipped": skipped,
            "modality": series.modality,
            "warnings": [w.replace(f"{deidentified}{os.sep}", "") for w in series.warnings],
        }
        return image, answer
    finally:
        archive.unlink(missing_ok=True)
        shutil.rmtree(work, ignore_errors=True)
