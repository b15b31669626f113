"""Tasks: claim, heartbeat, release, submit (annotate) and decide (review). See ``claims`` for the rules."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Header, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from sqlalchemy import select

from .. import claims, duties, review, submissions
from ..auth import Access
from ..errors import not_found
from ..group_commit import Op
from ..hotpath import bearer_hash, body_schema, json_body, json_response
from ..models import ANNOTATOR, LEASED, REVIEWER, Case, Task
from ..schemas import ClaimRequest, HeartbeatRequest, ProjectId, ReleaseRequest, ReviewDecision, TaskId
from ..services import Svc
from .cases import Multipart

router = APIRouter(prefix="/api/v1/projects/{project_id}/tasks", tags=["tasks"])

LeaseForm = Annotated[str, Form(min_length=1, max_length=64)]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=128)]


def _lease_seconds(services, requested: float | None) -> float:
    settings = services.settings
    return min(requested or settings.lease_seconds, settings.max_lease_seconds)


# The hot paths (claim, heartbeat, release) are async and touch no database themselves: the token, the body
# and the work go to this process's group-commit writer, which answers once its batch committed. They
# declare no dependency and no body parameter (each would cost a hop to the thread pool or FastAPI's body
# machinery); ``openapi_extra`` and ``response_model`` keep the OpenAPI document.


async def _call(request: Request, token: str, name: str, project_id: int, args: tuple, invalid=None) -> Response:
    return json_response(await request.app.state.writer.call(Op(name, token, project_id, args, invalid)))


@router.post(
    "/claim",
    response_model=dict,
    summary="Lease the next task (priority, then age); task null when none is free",
    openapi_extra=body_schema(ClaimRequest, required=False),
)
async def claim(project_id: ProjectId, request: Request) -> Response:
    token = bearer_hash(request)  # 401 before the body is read, as the dependency answered it
    body, invalid = await json_body(request, ClaimRequest, required=False)
    body = body or ClaimRequest()
    seconds = _lease_seconds(request.app.state.services, body.lease_seconds)
    return await _call(request, token, "claim", project_id, (body.kind, seconds), invalid)


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


@router.post(
    "/{task_id}/heartbeat",
    response_model=dict,
    summary="Extend the lease (needs the lease_id of the claim)",
    openapi_extra=body_schema(HeartbeatRequest, required=True),
)
async def heartbeat(project_id: ProjectId, task_id: TaskId, request: Request) -> Response:
    token = bearer_hash(request)
    body, invalid = await json_body(request, HeartbeatRequest, required=True)
    if invalid is not None:
        return await _call(request, token, "heartbeat", project_id, (), invalid)
    seconds = _lease_seconds(request.app.state.services, body.lease_seconds)
    return await _call(request, token, "heartbeat", project_id, (task_id, body.lease_id, seconds))


@router.post(
    "/{task_id}/release",
    response_model=dict,
    summary="Give the task back to the queue",
    openapi_extra=body_schema(ReleaseRequest, required=True),
)
async def release(project_id: ProjectId, task_id: TaskId, request: Request) -> Response:
    token = bearer_hash(request)
    body, invalid = await json_body(request, ReleaseRequest, required=True)
    args = () if invalid is not None else (task_id, body.lease_id, body.reason)
    return await _call(request, token, "release", project_id, args, invalid)


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
