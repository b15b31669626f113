"""Tasks: claim, heartbeat, release, submit (annotate) and decide (review). See ``claims`` for the rules."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Header, Request, UploadFile
from fastapi.responses import JSONResponse
from sqlalchemy import select

from .. import claims, duties, review, submissions
from ..auth import Access
from ..errors import ApiError, not_found
from ..models import ANNOTATE, ANNOTATOR, LEASED, REVIEW, REVIEWER, Case, Task
from ..schemas import ClaimRequest, HeartbeatRequest, ProjectId, ReleaseRequest, ReviewDecision, TaskId
from ..services import Svc
from .cases import Multipart

router = APIRouter(prefix="/api/v1/projects/{project_id}/tasks", tags=["tasks"])

LeaseForm = Annotated[str, Form(min_length=1, max_length=64)]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=128)]


def _lease_seconds(services, requested: float | None) -> float:
    settings = services.settings
    return min(requested or settings.lease_seconds, settings.max_lease_seconds)


# The hot paths (claim, heartbeat, release) take the services from the request rather than from the ``Svc``
# dependency (a sync dependency costs a hop to the thread pool) and answer with a JSONResponse (a plain
# dict would be validated and serialized in another hop); ``response_model`` keeps the OpenAPI document.


def _services(request: Request):
    return request.app.state.services


@router.post(
    "/claim", response_model=dict, summary="Lease the next task (priority, then age); task null when none is free"
)
def claim(project_id: ProjectId, access: Access, request: Request, body: ClaimRequest | None = None) -> JSONResponse:
    services = _services(request)
    body = body or ClaimRequest()
    kinds = [kind for kind, role in ((ANNOTATE, ANNOTATOR), (REVIEW, REVIEWER)) if role in access.roles]
    if body.kind is not None:
        if body.kind not in kinds:
            role = ANNOTATOR if body.kind == ANNOTATE else REVIEWER
            raise ApiError(403, "forbidden", f"{body.kind} tasks need the {role} role in project {project_id}")
        kinds = [body.kind]
    if not kinds:
        raise ApiError(403, "forbidden", "claiming needs the annotator or reviewer role in this project")
    task = claims.claim(
        services.database, access.caller, project_id, kinds, _lease_seconds(services, body.lease_seconds)
    )
    return JSONResponse({"task": task})


@router.get("", summary="The caller's tasks that are leased now, with their lease ids")
def my_tasks(project_id: ProjectId, access: Access, services: Svc) -> list[dict]:
    with services.database.reading() as session:
        rows = session.execute(
            select(Task)
            .where(Task.project_id == project_id, Task.holder_id == access.caller.id, Task.state == LEASED)
            .order_by(Task.id)
        ).scalars()
        return [claims.task_view(task, lease=True) for task in rows]


@router.get("/{task_id}", summary="A task (its holder; reviewers and admins who do not read its case)")
def get_task(project_id: ProjectId, task_id: TaskId, access: Access, services: Svc) -> dict:
    with services.database.reading() as session:
        task = session.get(Task, task_id)
        if task is None or task.project_id != project_id:
            raise not_found("task", task_id)
        mine = access.caller.id in (task.holder_id, task.assignee_id)
        if not mine and not (
            access.has(REVIEWER) and duties.may_see_others(session, access, session.get(Case, task.case_id))
        ):
            raise not_found("task", task_id)
        return claims.task_view(task)


@router.post("/{task_id}/heartbeat", response_model=dict, summary="Extend the lease (needs the lease_id of the claim)")
def heartbeat(
    project_id: ProjectId, task_id: TaskId, body: HeartbeatRequest, access: Access, request: Request
) -> JSONResponse:
    services = _services(request)
    seconds = _lease_seconds(services, body.lease_seconds)
    return JSONResponse(claims.heartbeat(services.database, access.caller, project_id, task_id, body.lease_id, seconds))


@router.post("/{task_id}/release", response_model=dict, summary="Give the task back to the queue")
def release(
    project_id: ProjectId, task_id: TaskId, body: ReleaseRequest, access: Access, request: Request
) -> JSONResponse:
    database = _services(request).database
    return JSONResponse(claims.release(database, access.caller, project_id, task_id, body.lease_id, body.reason))


@router.post(
    "/{task_id}/submissions",
    status_code=201,
    tags=["submissions"],
    summary="Submit a .seg.nrrd and its metadata JSON (Idempotency-Key honoured)",
)
def submit(
    project_id: ProjectId,
    task_id: TaskId,
    access: Access,
    services: Svc,
    segmentation: Annotated[UploadFile, File(description="the reader's Slicer .seg.nrrd")],
    lease_id: LeaseForm,
    metadata: Annotated[str | None, Form(max_length=1_000_000, description="JSON: time_spent_s, segments")] = None,
    idempotency_key: IdempotencyKey = None,
    _mp: None = Multipart,
):
    access.require(ANNOTATOR)
    status, body = submissions.submit(
        services, access.caller, project_id, task_id, segmentation, metadata, lease_id, idempotency_key
    )
    return JSONResponse(body, status_code=status)


@router.post("/{task_id}/review/edited", status_code=201, tags=["review"], summary="Upload the reviewer's edited final")
def review_edited(
    project_id: ProjectId,
    task_id: TaskId,
    access: Access,
    services: Svc,
    segmentation: Annotated[UploadFile, File()],
    lease_id: LeaseForm,
    _mp: None = Multipart,
) -> dict:
    access.require(REVIEWER)
    return review.upload_edited(services, access.caller, project_id, task_id, lease_id, segmentation)


@router.post("/{task_id}/review", tags=["review"], summary="Approve the case, or return it to readers with a comment")
def review_decision(
    project_id: ProjectId, task_id: TaskId, body: ReviewDecision, access: Access, services: Svc
) -> dict:
    access.require(REVIEWER)
    return review.decide(services, access.caller, project_id, task_id, body)
