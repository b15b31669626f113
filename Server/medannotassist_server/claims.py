"""Claims and leases: the next task by priority then age, atomically, for one reader.

A task is free when it is queued, or leased with ``lease_expires_at`` in the past: expiry is decided at
claim time, so no background job has to run. Each claim draws a new ``lease_id`` (the fencing token):
heartbeat, release and submit must present it, so a client whose lease expired and was claimed again by
someone else is refused (409 ``lease_lost``); the holder sending another id is told so (409
``lease_mismatch``). An expired lease that nobody claimed yet still works.

Separation of duties (``duties``): an annotate claim records its reader of the case, and a review claim
skips the cases the reviewer reads.

Claims, heartbeats and releases run in the group-commit writer (``group_commit``), many to a transaction,
in the order they came: each sees the ones before it. Their statements are Core statements run as driver
SQL (``driver_sql``) on the writer's transaction ``tx``. An operation that refuses (an ``ApiError``) has
changed nothing, so the others of its transaction commit. Each is a generator: on PostgreSQL it yields
once its statement is sent, so the writer sends the whole batch's statements in one pipeline before
reading any answer (the database still runs them in order); the writer runs it on with ``run``.

Atomicity: on SQLite the write transaction begins IMMEDIATE (one writer at a time, across threads and
processes); on PostgreSQL the candidate row is locked ``FOR UPDATE SKIP LOCKED`` so concurrent claimers
take different rows, and one reader's claims are serialized by an advisory lock (the writer takes those of
a transaction's claimers first, in id order), so that reader cannot get two annotate tasks of one case from
two concurrent claims. Either way the final UPDATE is conditional on the task still being free, and its
row count is checked.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from functools import cache

from sqlalchemy import Integer, and_, bindparam, or_, select, union_all, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session, aliased

from . import audit
from .auth import Caller, ProjectAccess
from .driver_sql import read_time
from .duties import record_reader
from .errors import ApiError, not_found
from .models import ANNOTATE, ANNOTATOR, LEASED, QUEUED, REVIEW, REVIEWER, SUBMITTED, CaseReader, Task, utcnow

CLAIM_LOCK_KEY = 7_420_002


VIEW_FIELDS = (
    "id", "project_id", "case_id", "kind", "state", "round", "priority", "lease_id", "lease_expires_at", "comment"
)  # fmt: skip


def task_view(task, lease: bool = False) -> dict:
    """A task (or a row with ``VIEW_FIELDS``) as the API shows it."""
    view = {
        "id": task.id,
        "project_id": task.project_id,
        "case_id": task.case_id,
        "kind": task.kind,
        "state": task.state,
        "round": task.round,
        "priority": task.priority,
        "lease_expires_at": task.lease_expires_at.isoformat() + "Z" if task.lease_expires_at else None,
        "comment": task.comment,
    }
    if lease:
        view["lease_id"] = task.lease_id
    return view


class _Row:
    """A driver row of ``VIEW_FIELDS`` with attribute access (what ``task_view`` reads)."""

    __slots__ = VIEW_FIELDS

    def __init__(self, values):
        for name, value in zip(VIEW_FIELDS, values, strict=True):
            setattr(self, name, value)
        self.lease_expires_at = read_time(self.lease_expires_at)
        # SQLite may hand a whole REAL back as an integer (RETURNING reads the stored record)
        self.priority = float(self.priority)


def claim_kinds(access: ProjectAccess, kind: str | None) -> list[str]:
    """The task kinds the caller may claim here (``kind``: the one asked for); 403 when none."""
    kinds = [k for k, role in ((ANNOTATE, ANNOTATOR), (REVIEW, REVIEWER)) if role in access.roles]
    if kind is not None:
        if kind not in kinds:
            role = ANNOTATOR if kind == ANNOTATE else REVIEWER
            raise ApiError(403, "forbidden", f"{kind} tasks need the {role} role in project {access.project_id}")
        return [kind]
    if not kinds:
        raise ApiError(403, "forbidden", "claiming needs the annotator or reviewer role in this project")
    return kinds


@cache
def _candidate(kind: str, expired: bool, postgres: bool):
    """The best free task of one kind: queued ones, or ones whose lease expired before ``:now``. Each is
    one walk of the index ``ix_tasks_queue`` in claim order, stopping at the first fit. Built once, with
    bound parameters ``:project_id``, ``:user_id`` and ``:now`` (building it costs more than running it)."""
    user_id = bindparam("user_id")
    other = aliased(Task)
    # the reader already holds or has submitted another annotate task of this case
    holds_one_of_case = (
        select(other.id)
        .where(
            other.case_id == Task.case_id,
            other.kind == ANNOTATE,
            other.id != Task.id,
            other.holder_id == user_id,
            or_(other.state == LEASED, other.state == SUBMITTED),
        )
        .exists()
    )
    free = (Task.state == LEASED, Task.lease_expires_at < bindparam("now")) if expired else (Task.state == QUEUED,)
    query = (
        select(Task.id, Task.priority, Task.created_at, Task.state, Task.holder_id)
        .where(
            Task.project_id == bindparam("project_id"),
            Task.kind == kind,
            *free,
            or_(Task.assignee_id.is_(None), Task.assignee_id == user_id),
        )
        .order_by(Task.priority.desc(), Task.created_at, Task.id)
        .limit(1)
    )
    if kind == ANNOTATE:
        query = query.where(~holds_one_of_case)
    elif kind == REVIEW:  # a case's readers never review it
        their_case = select(CaseReader.case_id).where(CaseReader.user_id == user_id, CaseReader.case_id == Task.case_id)
        query = query.where(~their_case.exists())
    return query.with_for_update(skip_locked=True, of=Task) if postgres else query


_FREE_NOW = or_(Task.state == QUEUED, and_(Task.state == LEASED, Task.lease_expires_at < bindparam("now")))
_LEASE = {
    "state": LEASED,
    "lease_id": bindparam("lease_id"),
    "holder_id": bindparam("user_id"),
    "lease_expires_at": bindparam("expires"),
    "claimed_at": bindparam("now"),
}
_TAKE = (
    update(Task)
    .where(Task.id == bindparam("task_id"), _FREE_NOW)
    .values(**_LEASE)
    .returning(*(getattr(Task, name) for name in VIEW_FIELDS))
)


def _best(tx, kinds: list[str], params: dict):
    """The first free task in claim order (priority, then age) over the kinds and both kinds of free task:
    (id, priority, created_at, state, holder_id)."""
    found = []
    for kind in kinds:
        for expired in (False, True):
            row = tx.run(_candidate(kind, expired, tx.postgres), params).fetchone()
            if row is not None:
                # created_at compares alike as SQLite's text and PostgreSQL's datetime
                found.append(((-row[1], row[2], row[0]), row))
    return min(found, key=lambda item: item[0])[1] if found else None


@cache
def _claim_at_once(kinds: tuple[str, ...]):
    """PostgreSQL: a claim in one statement (one round trip instead of four): each candidate locked ``SKIP
    LOCKED`` in a CTE, the best of them taken, and its reader recorded, returning the task as ``_TAKE``
    does followed by its state and holder before."""
    candidates = [
        _candidate(kind, expired, True).cte(f"free_{kind}_{int(expired)}")
        for kind in kinds
        for expired in (False, True)
    ]
    free = union_all(*(select(candidate) for candidate in candidates)).subquery("free")
    best = select(free).order_by(free.c.priority.desc(), free.c.created_at, free.c.id).limit(1).cte("best")
    taken = (
        update(Task)
        .where(Task.id == best.c.id, _FREE_NOW)
        .values(**_LEASE)
        .returning(*(getattr(Task, name) for name in VIEW_FIELDS), best.c.state.label("was"), best.c.holder_id)
        .cte("taken")
    )
    read = (
        postgresql.insert(CaseReader)
        .from_select(
            ["user_id", "case_id"],
            select(bindparam("user_id", type_=Integer), taken.c.case_id).where(taken.c.kind == ANNOTATE),
        )
        .on_conflict_do_nothing()
        .cte("read")
    )
    return select(*(taken.c[name] for name in VIEW_FIELDS), taken.c.was, taken.c.holder_id).add_cte(read)


def run(operation):
    """Run an operation (a generator of this module) to its end; its result."""
    try:
        while True:
            next(operation)
    except StopIteration as done:
        return done.value


def claim(tx, caller: Caller, project_id: int, kinds: list[str], lease_seconds: float):
    """Lease the next task for ``caller`` in the writer's transaction: the task's view, or None when nothing
    is free for them. On PostgreSQL the writer holds the caller's advisory lock already."""
    now = utcnow()
    params = {"project_id": project_id, "user_id": caller.id, "now": now}
    expires = now + timedelta(seconds=lease_seconds)
    if tx.postgres:
        # the candidates are locked: the take cannot miss, and no row means nothing is free
        sent = tx.run(_claim_at_once(tuple(kinds)), {**params, "lease_id": uuid.uuid4().hex, "expires": expires})
        yield
        row = sent.fetchone()
        if row is None:
            return None
        taken, candidate = _Row(row[: len(VIEW_FIELDS)]), (None, None, None, *row[len(VIEW_FIELDS) :])
    else:
        for _attempt in range(8):
            candidate = _best(tx, kinds, params)
            if candidate is None:
                return None
            lease = {"task_id": candidate[0], "lease_id": uuid.uuid4().hex, "expires": expires}
            taken = tx.run(_TAKE, {**params, **lease}).fetchone()
            if taken is not None:
                break
        else:
            return None
        taken = _Row(taken)
        if taken.kind == ANNOTATE:
            tx.run(record_reader(False), {"user_id": caller.id, "case_id": taken.case_id})
    tx.record(
        audit.event(
            caller.name,
            "task.claim",
            "task",
            taken.id,
            {"state": candidate[3], "holder_id": candidate[4]},
            {"state": LEASED, "holder_id": caller.id, "lease_expires_at": expires},
            project_id,
        )
    )
    return task_view(taken, lease=True)


def refusal(task, caller_id: int, project_id: int, task_id: int, lease_id: str) -> ApiError:
    """Why a fenced update matched no row (``task``: its state, holder_id, lease_id, project_id, or None):
    unknown task, or a lease that is no longer the caller's."""
    if task is None or task.project_id != project_id:
        return not_found("task", task_id)
    if task.state == SUBMITTED and task.holder_id == caller_id and task.lease_id == lease_id:
        return ApiError(409, "already_submitted", f"task {task_id} was already submitted with this lease")
    if task.state == LEASED and task.holder_id == caller_id and task.lease_id != lease_id:
        return ApiError(
            409,
            "lease_mismatch",
            f"task {task_id}: you hold it under another lease id than the one sent; "
            f"GET /api/v1/projects/{project_id}/tasks lists your leases with their ids",
        )
    if task.lease_id != lease_id or task.holder_id != caller_id or task.state != LEASED:
        return ApiError(
            409,
            "lease_lost",
            f"task {task_id}: this lease is no longer valid (it expired and the task was claimed again, "
            "was released, or the task is closed); claim a task again",
            task_state=task.state,
        )
    return ApiError(409, "lease_lost", f"task {task_id}: the lease could not be used")


def explain_refusal(session: Session, caller: Caller, project_id: int, task_id: int, lease_id: str) -> ApiError:
    return refusal(session.get(Task, task_id), caller.id, project_id, task_id, lease_id)


_FENCED = select(Task.project_id, Task.state, Task.holder_id, Task.lease_id).where(Task.id == bindparam("task_id"))


class _Fenced:
    __slots__ = ("project_id", "state", "holder_id", "lease_id")

    def __init__(self, values):
        self.project_id, self.state, self.holder_id, self.lease_id = values


def _refusal_in(tx, caller: Caller, project_id: int, task_id: int, lease_id: str) -> ApiError:
    row = tx.run(_FENCED, {"task_id": task_id}).fetchone()
    return refusal(_Fenced(row) if row is not None else None, caller.id, project_id, task_id, lease_id)


# bound names differ from column names: UPDATE reserves those for its SET clause
_FENCE = (
    Task.id == bindparam("f_task_id"),
    Task.project_id == bindparam("f_project_id"),
    Task.lease_id == bindparam("f_lease_id"),
    Task.holder_id == bindparam("f_user_id"),
    Task.state == LEASED,
)
_VIEW = tuple(getattr(Task, name) for name in VIEW_FIELDS)
_EXTEND = update(Task).where(*_FENCE).values(lease_expires_at=bindparam("expires")).returning(*_VIEW)
_RELEASE = (
    update(Task)
    .where(*_FENCE)
    .values(state=QUEUED, lease_id=None, lease_expires_at=None, holder_id=None, claimed_at=None)
    .returning(*_VIEW)
)


def _fence_params(caller: Caller, project_id: int, task_id: int, lease_id: str) -> dict:
    return {"f_task_id": task_id, "f_project_id": project_id, "f_lease_id": lease_id, "f_user_id": caller.id}


def heartbeat(tx, caller: Caller, project_id: int, task_id: int, lease_id: str, lease_seconds: float):
    """Extend a lease (not audited: a lease extension is not a change of the task's state)."""
    params = _fence_params(caller, project_id, task_id, lease_id)
    params["expires"] = utcnow() + timedelta(seconds=lease_seconds)
    sent = tx.run(_EXTEND, params)
    yield
    row = sent.fetchone()
    if row is None:  # read after the batch's statements on PostgreSQL: the reason as it stands then
        raise _refusal_in(tx, caller, project_id, task_id, lease_id)
    return task_view(_Row(row))


def release(tx, caller: Caller, project_id: int, task_id: int, lease_id: str, reason: str | None = None):
    """Back to the queue; ``reason`` (a reader skipping the case) is kept in the audit event."""
    sent = tx.run(_RELEASE, _fence_params(caller, project_id, task_id, lease_id))
    yield
    row = sent.fetchone()
    if row is None:
        raise _refusal_in(tx, caller, project_id, task_id, lease_id)
    tx.record(
        audit.event(
            caller.name,
            "task.release",
            "task",
            task_id,
            {"state": LEASED, "holder_id": caller.id},
            {"state": QUEUED, "holder_id": None} | ({"reason": reason} if reason else {}),
            project_id,
        )
    )
    return task_view(_Row(row))


def lease_task(session: Session, caller: Caller, project_id: int, task_id: int, lease_id: str, kind: str) -> Task:
    """The task a valid lease holds (read check before a long upload; the write repeats it, fenced)."""
    task = session.get(Task, task_id)
    if task is None or task.project_id != project_id:
        raise not_found("task", task_id)
    if task.kind != kind:
        raise ApiError(409, "wrong_task_kind", f"task {task_id} is a {task.kind} task, not a {kind} task")
    if task.lease_id != lease_id or task.holder_id != caller.id or task.state != LEASED:
        raise explain_refusal(session, caller, project_id, task_id, lease_id)
    return task
