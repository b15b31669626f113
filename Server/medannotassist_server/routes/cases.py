"""Images, cases, AI pre-segmentations, and what readers produced: submissions, consensus, final.

Blinding (``duties``): a case's readers, whatever their other roles, see their own submissions only;
other readers' work, the consensus and the final become visible to them once the case is approved.
Reviewers and admins who do not read the case see everything; annotators see their own cases.
"""

from __future__ import annotations

import json
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse
from sqlalchemy import select

from .. import consensus_step
from ..auth import Access, ProjectAccess
from ..cases import add_cases, attach_ai_segmentation, case_in_project, store_image
from ..consensus_step import latest_submissions
from ..dicom_ingest import ingest_dicom_series
from ..duties import cases_read, may_see_others, reads_case, sees_others
from ..errors import ApiError, not_found
from ..models import ADMIN, ANNOTATOR, APPROVED, REVIEWER, Case, ConsensusResult, Image, Project, Submission, Task, User
from ..schemas import MAX_ID, NAME_PATTERN, BulkCases, CaseId, ProjectId, SubmissionId
from ..services import Services, Svc
from ..submissions import submission_view

router = APIRouter(prefix="/api/v1/projects/{project_id}", tags=["cases"])


def multipart(request: Request) -> None:
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise ApiError(
            415,
            "unsupported_media_type",
            f"this endpoint takes multipart/form-data, not {content_type.split(';')[0] or 'an empty content type'}",
        )


Multipart = Depends(multipart)


def case_view(session, case: Case, access: ProjectAccess, reads: bool | None = None) -> dict:
    """``reads``: whether the caller reads the case (looked up when not given)."""
    if reads is None:
        reads = reads_case(session, access.caller.id, case.id)
    all_tasks = access.has(REVIEWER) and (not reads or case.state == APPROVED)
    tasks = session.execute(
        select(Task, User.name)
        .outerjoin(User, User.id == Task.holder_id)
        .where(Task.case_id == case.id)
        .order_by(Task.id)
    ).all()
    visible = [
        {"id": t.id, "kind": t.kind, "state": t.state, "round": t.round, "reader": name}
        for t, name in tasks
        if all_tasks or access.caller.id in (t.holder_id, t.assignee_id)
    ]
    return {
        "id": case.id,
        "name": case.name,
        "state": case.state,
        "round": case.round,
        "priority": case.priority,
        "image_sha256": case.image_sha256,
        "dicomweb": json.loads(case.dicomweb_json) if case.dicomweb_json else None,
        "ai_segmentation": case.ai_seg_sha256,
        "ai_uncertainty": case.ai_uncertainty,
        "final_sha256": case.final_sha256 if sees_others(access, case, reads) else None,
        "tasks": visible,
        "consensus": consensus_step.job_view(session, case.id) if sees_others(access, case, reads) else None,
    }


@router.post("/images", status_code=201, summary="Upload an image (NIfTI/NRRD) once; cases refer to it (admin)")
def upload_image(
    project_id: ProjectId, access: Access, services: Svc, image: Annotated[UploadFile, File()], _mp: None = Multipart
) -> dict:
    access.require(ADMIN)
    return store_image(services, access.caller, image, project_id=project_id)


@router.post("/cases", status_code=201, summary="Upload an image as a new case with its annotate tasks (admin)")
def upload_case(
    project_id: ProjectId,
    access: Access,
    services: Svc,
    image: Annotated[UploadFile, File()],
    name: Annotated[str, Form(pattern=NAME_PATTERN)],
    priority: Annotated[float, Form(ge=-1e9, le=1e9, allow_inf_nan=False)] = 0.0,
    _mp: None = Multipart,
) -> dict:
    access.require(ADMIN)
    stored = store_image(services, access.caller, image, project_id=project_id)
    return _case_of_image(services, access, project_id, stored, name, priority)


def _case_of_image(
    services: Services, access: ProjectAccess, project_id: int, stored: dict, name: str, priority: float
) -> dict:
    """A new case (and its annotate tasks) on an image just stored; the answer holds the case and the image."""
    with services.database.writing() as session:
        project = session.get(Project, project_id)
        spec = {"name": name, "image_sha256": stored["sha256"], "priority": priority}
        case = add_cases(session, access.caller, project, [spec])[0]
        return case_view(session, case, access, reads=False) | {"image": stored}


@router.post(
    "/cases/dicom",
    status_code=201,
    summary="A zipped DICOM series as a new case, de-identified on ingest (PS3.15) and stored as one volume (admin)",
)
def upload_dicom_case(
    project_id: ProjectId,
    access: Access,
    services: Svc,
    series: Annotated[UploadFile, File()],
    name: Annotated[str, Form(pattern=NAME_PATTERN)],
    priority: Annotated[float, Form(ge=-1e9, le=1e9, allow_inf_nan=False)] = 0.0,
    _mp: None = Multipart,
) -> dict:
    access.require(ADMIN)
    stored, deidentification = ingest_dicom_series(services, access.caller, project_id, series)
    return _case_of_image(services, access, project_id, stored, name, priority) | {"deidentification": deidentification}


@router.post("/cases/bulk", status_code=201, summary="Many cases at once: stored images or DICOMweb series (admin)")
def bulk_cases(project_id: ProjectId, body: BulkCases, access: Access, services: Svc) -> dict:
    access.require(ADMIN)
    if len(body.cases) > services.settings.max_bulk_cases:
        raise ApiError(413, "too_many_cases", f"at most {services.settings.max_bulk_cases} cases per request")
    specs = [c.model_dump() for c in body.cases]
    with services.database.writing() as session:
        project = session.get(Project, project_id)
        cases = add_cases(session, access.caller, project, specs)
        return {"created": len(cases), "case_ids": [c.id for c in cases]}


@router.get("/cases", summary="Cases (all for reviewers and admins; an annotator's own)")
def list_cases(
    project_id: ProjectId,
    access: Access,
    services: Svc,
    state: Literal["annotating", "review", "approved"] | None = None,
    after: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict]:
    with services.database.reading() as session:
        query = select(Case).where(Case.project_id == project_id, Case.id > after).order_by(Case.id).limit(limit)
        if state:
            query = query.where(Case.state == state)
        if not access.has(REVIEWER):
            mine = (Task.holder_id == access.caller.id) | (Task.assignee_id == access.caller.id)
            query = query.where(Case.id.in_(select(Task.case_id).where(mine)))
        cases = session.execute(query).scalars().all()
        read = cases_read(session, access.caller.id, [case.id for case in cases])
        return [case_view(session, case, access, case.id in read) for case in cases]


@router.get("/cases/{case_id}", summary="A case, its state and the tasks the caller may see")
def get_case(project_id: ProjectId, case_id: CaseId, access: Access, services: Svc) -> dict:
    with services.database.reading() as session:
        return case_view(session, case_in_project(session, project_id, case_id), access)


@router.get("/cases/{case_id}/image", summary="The case image")
def case_image(project_id: ProjectId, case_id: CaseId, access: Access, services: Svc):
    access.require(ANNOTATOR, REVIEWER)
    with services.database.reading() as session:
        case = case_in_project(session, project_id, case_id)
        image = session.get(Image, case.image_sha256) if case.image_sha256 else None
    if image is None:
        raise ApiError(404, "image_not_found", f"case {case_id} refers to a DICOMweb series; fetch it from there")
    path = services.blobs.path(image.sha256, image.suffix)
    return FileResponse(path, media_type="application/octet-stream", filename=f"{case.name}{image.suffix}")


@router.put("/cases/{case_id}/ai-segmentation", summary="Attach an AI pre-segmentation and its uncertainty (admin)")
def put_ai_segmentation(
    project_id: ProjectId,
    case_id: CaseId,
    access: Access,
    services: Svc,
    segmentation: Annotated[UploadFile, File()],
    uncertainty: Annotated[float | None, Form(ge=0, le=1, allow_inf_nan=False)] = None,
    engine: Annotated[str, Form(max_length=200, pattern=r"^[^\x00]*$")] = "",
    _mp: None = Multipart,
) -> dict:
    access.require(ADMIN)
    return attach_ai_segmentation(services, access.caller, project_id, case_id, segmentation, uncertainty, engine)


@router.get("/cases/{case_id}/ai-segmentation", summary="The AI pre-segmentation, the readers' starting point")
def get_ai_segmentation(project_id: ProjectId, case_id: CaseId, access: Access, services: Svc):
    access.require(ANNOTATOR, REVIEWER)
    with services.database.reading() as session:
        case = case_in_project(session, project_id, case_id)
    if not case.ai_seg_sha256:
        raise ApiError(404, "ai_segmentation_not_found", f"case {case_id} has no AI pre-segmentation")
    path = services.blobs.path(case.ai_seg_sha256, ".seg.nrrd")
    return FileResponse(path, media_type="application/octet-stream", filename=f"{case.name}-ai.seg.nrrd")


@router.get("/cases/{case_id}/submissions", tags=["submissions"], summary="Submissions (an annotator: their own)")
def case_submissions(project_id: ProjectId, case_id: CaseId, access: Access, services: Svc) -> list[dict]:
    with services.database.reading() as session:
        case = case_in_project(session, project_id, case_id)
        query = (
            select(Submission, User.name)
            .join(User, User.id == Submission.reader_id)
            .where(Submission.case_id == case.id)
            .order_by(Submission.id)
        )
        if not may_see_others(session, access, case):
            query = query.where(Submission.reader_id == access.caller.id)
        return [submission_view(row, name) for row, name in session.execute(query).all()]


@router.get("/submissions/{submission_id}/file", tags=["submissions"], summary="A submission's .seg.nrrd (blinded)")
def submission_file(project_id: ProjectId, submission_id: SubmissionId, access: Access, services: Svc):
    with services.database.reading() as session:
        row = session.get(Submission, submission_id)
        if row is None or row.project_id != project_id:
            raise not_found("submission", submission_id)
        # blinded: answered as a missing id, so probing ids does not count the case's submissions
        if row.reader_id != access.caller.id and not may_see_others(session, access, session.get(Case, row.case_id)):
            raise not_found("submission", submission_id)
    path = services.blobs.path(row.sha256, ".seg.nrrd")
    return FileResponse(path, media_type="application/octet-stream", filename=f"submission-{row.id}.seg.nrrd")


def _consensus(services, access: ProjectAccess, project_id: int, case_id: int) -> tuple[Case, ConsensusResult]:
    with services.database.reading() as session:
        case = case_in_project(session, project_id, case_id)
        consensus = session.execute(
            select(ConsensusResult).where(ConsensusResult.case_id == case_id).order_by(ConsensusResult.round.desc())
        ).first()
        others = may_see_others(session, access, case)
    if not others:
        raise ApiError(
            403,
            "blinded",
            "the consensus is shown to annotators and the case's readers only after the case is approved",
        )
    if consensus is None:
        raise ApiError(404, "consensus_not_found", f"case {case_id} has no consensus yet (readers still working)")
    return case, consensus[0]


@router.get("/cases/{case_id}/consensus", tags=["review"], summary="Consensus and agreement of the latest round")
def get_consensus(project_id: ProjectId, case_id: CaseId, access: Access, services: Svc) -> dict:
    case, consensus = _consensus(services, access, project_id, case_id)
    with services.database.reading() as session:
        latest = latest_submissions(session, case_id)
    readers = [name for _row, name in latest]
    return {
        "case_id": case_id,
        "round": consensus.round,
        "readers": readers,
        "submission_ids": json.loads(consensus.submission_ids_json),
        "consensus_sha256": consensus.consensus_sha256,
        "agreement": json.loads(consensus.agreement_json),
        "overrides": {name: json.loads(row.overrides_json) for row, name in latest},  # each reader's, by reader
    }


CONSENSUS_PARTS = {"consensus": ("consensus_sha256", ".seg.nrrd"), "disagreement": ("disagreement_sha256", ".nrrd")}
CONSENSUS_PARTS["report"] = ("report_sha256", ".html")


@router.get("/cases/{case_id}/consensus/{part}", tags=["review"], summary="consensus.seg.nrrd, disagreement or report")
def consensus_file(
    project_id: ProjectId,
    case_id: CaseId,
    part: Literal["consensus", "disagreement", "report"],
    access: Access,
    services: Svc,
):
    case, consensus = _consensus(services, access, project_id, case_id)
    column, suffix = CONSENSUS_PARTS[part]
    media = "text/html" if suffix == ".html" else "application/octet-stream"
    path = services.blobs.path(getattr(consensus, column), suffix)
    return FileResponse(path, media_type=media, filename=f"{case.name}-{part}{suffix}")


@router.get("/cases/{case_id}/final", tags=["review"], summary="The approved final segmentation")
def final_file(project_id: ProjectId, case_id: CaseId, access: Access, services: Svc):
    with services.database.reading() as session:
        case = case_in_project(session, project_id, case_id)
        others = may_see_others(session, access, case)
    if not others:
        raise ApiError(
            403,
            "blinded",
            "the final segmentation is shown to annotators and the case's readers once the case is approved",
        )
    if not case.final_sha256:
        raise ApiError(404, "final_not_found", f"case {case_id} is not approved yet")
    path = services.blobs.path(case.final_sha256, ".seg.nrrd")
    return FileResponse(path, media_type="application/octet-stream", filename=f"{case.name}-final.seg.nrrd")


@router.post(
    "/cases/{case_id}/consensus",
    tags=["review"],
    summary="Queue the consensus of a case whose readers are all in, or a failed one again (admin)",
)
def queue_consensus(project_id: ProjectId, case_id: CaseId, access: Access, services: Svc) -> dict:
    access.require(ADMIN)
    with services.database.reading() as session:
        case_in_project(session, project_id, case_id)
    queued = consensus_step.enqueue(services, case_id, actor=access.caller.name)
    with services.database.reading() as session:
        case = session.get(Case, case_id)
        job = consensus_step.job_view(session, case_id)
        return {"case_id": case_id, "state": case.state, "queued": queued, "consensus": job}
