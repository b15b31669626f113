"""A claimed task's files, fetched in a job: the image and AI pre-segmentation from the queue server (through
the image cache), or, for a case the server knows only by a DICOMweb reference, its series retrieved from
that DICOMweb server (WADO-RS) into the cache folder, written once per series."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from ..core.dicom.web import DicomWebClient, DicomWebSource
from ..core.queue_client import CaseFiles
from ..core.queue_errors import NotFound

COMPLETE = ".complete"  # <series uid>.complete beside its folder, written last: without it, a retrieval cut short


class DicomWebSourceMissingError(ValueError):
    """The case's series is on a DICOMweb server the workstation was given no credentials for."""


def fetch_task(client, cache, project_id: int, task: dict, dicomweb: dict[str, DicomWebSource], progress, cancel):
    """``(task, case, files)``: the case view and, for an annotate task, its ``CaseFiles`` (None for a review
    task). A failure after the claim comes back in place of the files: the claim stands and is shown, so the
    reader can release or skip it."""
    case = {"id": task["case_id"], "name": f"case {task['case_id']}"}
    try:
        case = client.case(project_id, task["case_id"])
        if task["kind"] != "annotate":
            return task, case, None
        cache.pinned = {s for s in (case.get("image_sha256"), case.get("ai_segmentation")) if s}
        if case.get("image_sha256") or not case.get("dicomweb"):
            return task, case, client.fetch_case(project_id, case, cache, progress=progress, cancel=cancel)
        return task, case, _dicomweb_case(client, cache, project_id, case, dicomweb, progress, cancel)
    except Exception as error:  # noqa: BLE001 - whatever it was, the claim stands and the reader is told
        return task, case, error


def _dicomweb_case(client, cache, project_id: int, case: dict, sources: dict, progress, cancel) -> CaseFiles:
    reference = case["dicomweb"]
    url = str(reference.get("url", "")).rstrip("/")
    source = sources.get(url)
    if source is None:
        raise DicomWebSourceMissingError(
            f"case {case['name']} is a series on the DICOMweb server {url}: add that server (and its credentials) "
            "to the workstation's DICOMweb sources"
        )
    folder = retrieve_series(
        source, reference["study_uid"], reference["series_uid"], Path(cache.folder) / "dicom", progress, cancel
    )
    ai = None
    if case.get("ai_segmentation"):
        try:
            ai = cache.fetch(
                case["ai_segmentation"],
                lambda into: client.download_ai_segmentation(project_id, case["id"], into, cancel=cancel),
            )
        except NotFound:
            ai = None
    return CaseFiles(case, folder, ai)


def retrieve_series(source: DicomWebSource, study_uid: str, series_uid: str, root: Path, progress=None, cancel=None):
    """The series' instances as files in ``root/<series uid>/`` (retrieved once: a complete folder is kept)."""
    folder = Path(root) / series_uid
    done = folder.with_name(series_uid + COMPLETE)
    if done.is_file() and folder.is_dir():
        return folder
    import pydicom

    with DicomWebClient(source) as web:
        datasets = web.retrieve_datasets(study_uid, series_uid, progress=progress, cancel=cancel)
    partial = folder.with_name(f".{series_uid}.{uuid.uuid4().hex[:8]}")
    partial.mkdir(parents=True)
    try:
        for index, dataset in enumerate(datasets):
            pydicom.dcmwrite(partial / f"{index:05d}.dcm", dataset, enforce_file_format=True)
        if folder.exists():
            shutil.rmtree(folder)  # an earlier retrieval cut short
        os.replace(partial, folder)
        done.write_text(f"{len(datasets)} instances from {source.url}\n")
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return folder
