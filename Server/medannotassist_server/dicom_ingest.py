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


def project_key(services: Services, project_id: int) -> str:
    """The project's de-identification key: created once (owner-only file in the data directory), then
    reused, so the same patient and UIDs map to the same pseudonyms in every later upload."""
    path = services.settings.data_dir / "deid-keys" / f"project-{project_id}.key"
    try:
        return read_or_create_project_key(path)
    except FileExistsError:  # another replica created it a moment ago
        return read_or_create_project_key(path)


def _unpack(archive: Path, folder: Path, limit: int) -> dict[str, str]:
    """Members into ``folder`` as 00000.dcm, 00001.dcm, ...; returns flattened name -> member name."""
    try:
        zipped = zipfile.ZipFile(archive)
    except zipfile.BadZipFile:
        raise ApiError(415, "unsupported_file_type", "series: not a zip archive of DICOM files") from None
    with zipped:
        members = [info for info in zipped.infolist() if not info.is_dir()]
        if not members:
            raise ApiError(422, "no_dicom", "series: the zip archive is empty")
        if len(members) > MAX_MEMBERS:
            raise ApiError(413, "upload_too_large", f"series: more than {MAX_MEMBERS} files in the archive")
        unpacked = sum(info.file_size for info in members)
        if unpacked > limit:
            message = f"series: {unpacked} bytes once unpacked, over the limit of {limit}"
            raise ApiError(413, "upload_too_large", message, limit_bytes=limit)
        names = {}
        for index, info in enumerate(members):
            name = f"{index:05d}.dcm"
            try:
                with zipped.open(info) as source, open(folder / name, "wb") as target:
                    shutil.copyfileobj(source, target, 1024 * 1024)
            except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as error:
                # damaged, encrypted or an unsupported compression method
                raise ApiError(422, "bad_dicom", f"series: cannot unpack {info.filename}: {error}") from None
            names[name] = info.filename
        return names


def ingest_dicom_series(services: Services, caller: Caller, project_id: int, upload: UploadFile) -> tuple[dict, dict]:
    """(stored image, de-identification summary for the answer) of a zipped DICOM series."""
    filename, _ = checked_filename(upload.filename, (".zip",), "series")
    limit = services.settings.max_upload_bytes
    archive, _, _ = receive(services.blobs, upload, ".zip", limit)
    work = Path(tempfile.mkdtemp(dir=services.blobs.tmp, prefix="dicom-"))
    try:
        received, deidentified = work / "received", work / "deidentified"
        received.mkdir()
        names = _unpack(archive, received, UNPACKED_FACTOR * limit)
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
        if summary.files_written == 0:
            skipped = [{"file": names.get(note.file, note.file), "reason": note.reason} for note in summary.skipped]
            raise ApiError(422, "no_dicom", "series: no DICOM image file in the archive", files=skipped[:50])
        try:
            series = read_series(deidentified)
        except DicomError as error:  # paths inside the message are the de-identified names in our folder
            raise ApiError(422, "bad_dicom_series", str(error).replace(f"{deidentified}{os.sep}", "")) from None
        volume = services.blobs.temporary(".nrrd")
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
            "skipped": [{"file": names.get(n.file, n.file), "reason": n.reason} for n in summary.skipped],
            "modality": series.modality,
            "warnings": [w.replace(f"{deidentified}{os.sep}", "") for w in series.warnings],
        }
        return image, answer
    finally:
        archive.unlink(missing_ok=True)
        shutil.rmtree(work, ignore_errors=True)
