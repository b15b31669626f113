"""The jobs table: server-side work that no request waits for (today: a case's consensus of one round).

A job is queued → running → done, or back to queued after a failed attempt (after a backoff that doubles)
and failed for good after ``job_max_attempts``; an admin can queue a failed job again. A worker takes a job
in one short write transaction (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so workers never wait on each
other's rows and exactly one gets each job; SQLite's ``BEGIN IMMEDIATE`` serializes takers) and holds it
under a lease it heartbeats: a job whose worker died (its lease expired) is taken again by another. What a
job records is guarded by the database itself (consensus: unique per case and round, and the case moves on
only while it is waiting), so a job run twice after a lost lease still records once.

Threads live in ``worker``; this module only reads and writes rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select, update

from .db import Database
from .models import JOB_DONE, JOB_FAILED, JOB_QUEUED, JOB_RUNNING, Job, utcnow

MAX_BACKOFF_S = 3600.0
MAX_ERROR_CHARS = 500

# called after a job was queued in this process, so a sleeping worker thread wakes at once
_listeners: list[Callable[[], None]] = []


def listen(callback: Callable[[], None]) -> None:
    _listeners.append(callback)


def unlisten(callback: Callable[[], None]) -> None:
    if callback in _listeners:
        _listeners.remove(callback)


def notify() -> None:
    for callback in list(_listeners):
        callback()


@dataclass(frozen=True)
class Ticket:
    """A job a worker holds: what it needs to run it, detached from any session."""

    id: int
    kind: str
    project_id: int
    case_id: int
    round: int
    attempts: int


def add(session, kind: str, project_id: int, case_id: int, round_: int) -> tuple[Job, bool]:
    """The job of (kind, case, round), queued now unless it exists; returns (job, created). The caller holds
    the case's row lock, so two requests never both add it."""
    job = session.execute(
        select(Job).where(Job.kind == kind, Job.case_id == case_id, Job.round == round_)
    ).scalar_one_or_none()
    if job is not None:
        return job, False
    now = utcnow()
    job = Job(
        kind=kind, project_id=project_id, case_id=case_id, round=round_, state=JOB_QUEUED, run_after=now, queued_at=now
    )
    session.add(job)
    session.flush()
    return job, True


def requeue(job: Job) -> None:
    """A failed job queued again by an admin: its attempts start over."""
    job.state, job.attempts, job.run_after = JOB_QUEUED, 0, utcnow()
    job.worker = job.lease_expires_at = job.finished_at = None


def take(database: Database, worker: str, lease_s: float, max_attempts: int) -> Ticket | None:
    """Take the oldest due job (or one whose worker's lease expired) for ``worker``; None when there is none.
    A job whose worker died ``max_attempts`` times is failed instead of taken again."""
    with database.writing() as session:
        now = utcnow()
        while True:
            job = session.execute(
                select(Job)
                .where(
                    or_(
                        (Job.state == JOB_QUEUED) & (Job.run_after <= now),
                        (Job.state == JOB_RUNNING) & (Job.lease_expires_at < now),
                    )
                )
                .order_by(Job.run_after, Job.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            ).scalar_one_or_none()
            if job is None:
                return None
            if job.state == JOB_RUNNING and job.attempts >= max_attempts:
                job.state, job.finished_at, job.lease_expires_at = JOB_FAILED, now, None
                job.error = f"its worker stopped during attempt {job.attempts} of {max_attempts} (lease expired)"
                session.flush()
                continue
            job.state, job.worker, job.attempts = JOB_RUNNING, worker, job.attempts + 1
            job.started_at, job.lease_expires_at, job.finished_at = now, now + timedelta(seconds=lease_s), None
            return Ticket(job.id, job.kind, job.project_id, job.case_id, job.round, job.attempts)


def due(database: Database) -> bool:
    """Whether any job could be taken now (a cheap read before a write transaction)."""
    now = utcnow()
    with database.reading() as session:
        return (
            session.execute(
                select(Job.id)
                .where(
                    or_(
                        (Job.state == JOB_QUEUED) & (Job.run_after <= now),
                        (Job.state == JOB_RUNNING) & (Job.lease_expires_at < now),
                    )
                )
                .limit(1)
            ).first()
            is not None
        )


def _held(job_id: int, worker: str):
    return (Job.id == job_id) & (Job.worker == worker) & (Job.state == JOB_RUNNING)


def heartbeat(database: Database, job_id: int, worker: str, lease_s: float) -> bool:
    """Extend the lease; False when the job is no longer this worker's (its lease expired and it was taken)."""
    with database.writing() as session:
        expires = utcnow() + timedelta(seconds=lease_s)
        changed = session.execute(update(Job).where(_held(job_id, worker)).values(lease_expires_at=expires))
        return changed.rowcount == 1


def finish(session, job_id: int, worker: str) -> None:
    """Mark the job done, in the transaction that recorded its result."""
    session.execute(
        update(Job).where(_held(job_id, worker)).values(state=JOB_DONE, finished_at=utcnow(), lease_expires_at=None)
    )


def fail(database: Database, ticket: Ticket, worker: str, error: str, max_attempts: int, retry_s: float) -> str:
    """Record a failed attempt: queued again after a backoff, or failed for good; returns the new state."""
    error = error if len(error) <= MAX_ERROR_CHARS else error[: MAX_ERROR_CHARS - 1] + "…"
    with database.writing() as session:
        now = utcnow()
        if ticket.attempts >= max_attempts:
            values = {"state": JOB_FAILED, "finished_at": now}
        else:
            backoff = min(MAX_BACKOFF_S, retry_s * 2 ** (ticket.attempts - 1))
            values = {"state": JOB_QUEUED, "run_after": now + timedelta(seconds=backoff)}
        session.execute(
            update(Job).where(_held(ticket.id, worker)).values(error=error, lease_expires_at=None, **values)
        )
        return values["state"]


def release(database: Database, ticket: Ticket, worker: str) -> None:
    """A stopping worker hands its job back: queued at once, the attempt not counted."""
    with database.writing() as session:
        session.execute(
            update(Job)
            .where(_held(ticket.id, worker))
            .values(state=JOB_QUEUED, attempts=Job.attempts - 1, run_after=utcnow(), lease_expires_at=None)
        )


def latest(session, kind: str, case_id: int) -> Job | None:
    return session.execute(
        select(Job).where(Job.kind == kind, Job.case_id == case_id).order_by(Job.round.desc()).limit(1)
    ).scalar_one_or_none()


def counts(session, project_id: int) -> dict[str, int]:
    rows = session.execute(select(Job.state, func.count()).where(Job.project_id == project_id).group_by(Job.state))
    return dict(rows.all())


def _time(value: datetime | None) -> str | None:
    return value.isoformat() + "Z" if value else None


def view(job: Job) -> dict:
    seconds = (job.finished_at - job.started_at).total_seconds() if job.finished_at and job.started_at else None
    return {
        "id": job.id,
        "kind": job.kind,
        "case_id": job.case_id,
        "round": job.round,
        "state": job.state,
        "attempts": job.attempts,
        "error": job.error,
        "worker": job.worker,
        "queued_at": _time(job.queued_at),
        "started_at": _time(job.started_at),
        "finished_at": _time(job.finished_at),
        "seconds": round(seconds, 3) if seconds is not None else None,
        "retry_at": _time(job.run_after) if job.state == JOB_QUEUED and job.attempts else None,
    }
