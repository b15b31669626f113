"""What the task panel shows, as plain frozen values (see ``task.TaskModel``): the connection, the project,
the task and its lease countdown, the case's active time, the outbox, and each button with why it is off;
and what the panel says about the server's errors and the outbox's refused submissions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ..core.outbox import FAILED, Outbox, OutboxEntry
from ..core.queue_errors import AuthError, Offline, QueueError, TlsError, error_from_answer
from .events import Action, first_off, on

DISCONNECTED, CONNECTING, CONNECTED = "disconnected", "connecting", "connected"
CASE_JOB, SYNC_JOB, CALL_JOB, SUBMIT_JOB = "case", "sync", "call", "submit"  # the task model's jobs
# lease states: none held, held (heartbeats answered), offline (heartbeats unanswered: not lost yet),
# lost (someone else holds the task, or it is closed), released (given back)
NO_LEASE, HELD, LEASE_OFFLINE, LOST, RELEASED = "none", "held", "offline", "lost", "released"
TASK_ACTIONS = (
    "connect",
    "disconnect",
    "select_project",
    "next_task",
    "submit",
    "release",
    "skip",
    "claim_again",
    "sync",
    "pause",
    "resume",
)


@dataclass(frozen=True)
class ProjectRow:
    id: int
    name: str
    roles: tuple[str, ...]


@dataclass(frozen=True)
class TaskRow:
    """The task in hand: ``comment`` is the reviewer's when the case came back to the reader."""

    id: int
    kind: str
    case_id: int
    case_name: str
    round: int
    comment: str | None = None


@dataclass(frozen=True)
class LeaseRow:
    state: str = NO_LEASE
    seconds_left: int | None = None  # on the server's clock
    text: str = ""


@dataclass(frozen=True)
class TimesRow:
    """Active time on the open case, idle time excluded (whole seconds, for display)."""

    case_s: int = 0
    idle_s: int = 0
    paused: bool = False
    idle: bool = False
    structures: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class FailedSubmission:
    """A submission the server refused: it stays in the outbox, with its file, until the user decides."""

    id: int
    case_id: int | None
    task_id: int
    code: str
    message: str
    failures: tuple[str, ...] = ()
    lease_lost: bool = False


@dataclass(frozen=True)
class OutboxRow:
    pending: int = 0  # written, not yet acknowledged by the server
    failed: tuple[FailedSubmission, ...] = ()
    text: str = ""


@dataclass(frozen=True)
class Progress:
    fraction: float
    message: str


@dataclass(frozen=True)
class TaskState:
    server_url: str
    user: str | None
    connection: str
    offline: bool
    projects: tuple[ProjectRow, ...]
    project_id: int | None
    protocol: str | None  # id@version of the project's frozen protocol
    task: TaskRow | None
    lease: LeaseRow
    loading: Progress | None
    times: TimesRow
    outbox: OutboxRow
    message: str
    message_is_error: bool
    actions: Mapping[str, Action]

    @property
    def offline_text(self) -> str:
        return "offline: submissions wait in the outbox" if self.offline else ""


# ---- the state of a TaskModel (read-only views of it) ----


def build_state(model) -> TaskState:
    current = model.current
    row = None
    if current is not None:
        task, case = current.task, current.case
        row = TaskRow(
            task["id"], task["kind"], task["case_id"], case.get("name", ""), task.get("round", 1), task.get("comment")
        )
    job = model.background.job(CASE_JOB)
    loading = Progress(*job.progress) if job is not None else None
    return TaskState(
        server_url=model.client.url if model.client else model.settings.server_url,
        user=model.client.user if model.client else model.settings.user,
        connection=model.connection,
        offline=bool(model.client and model.client.offline),
        projects=tuple(ProjectRow(p["id"], p["name"], tuple(p.get("roles", ()))) for p in model.projects),
        project_id=model.project["id"] if model.project else None,
        protocol=model.protocol.label if model.protocol else None,
        task=row,
        lease=lease_row(model),
        loading=loading,
        times=times_row(model),
        outbox=outbox_row(model),
        message=model.message,
        message_is_error=model.message_is_error,
        actions=task_actions(model),
    )


def lease_row(model) -> LeaseRow:
    if model.current is None:
        return LeaseRow()
    lease = model.current.lease
    left = lease.seconds_left()
    seconds = None if left is None else int(left)
    if lease.lost is not None:
        free = lease.lost.task_free
        where = "it is free again" if free else "someone else holds it" if free is False else "it is closed"
        return LeaseRow(LOST, None, f"lease lost: {where}; your work is kept (Claim again)")
    if lease.offline:
        return LeaseRow(LEASE_OFFLINE, seconds, "offline: the lease is kept while nobody else claims the task")
    return LeaseRow(HELD, seconds, "" if seconds is None else f"{seconds // 60}:{seconds % 60:02d} left")


def times_row(model) -> TimesRow:
    session = model.session
    if session is None:
        return TimesRow()
    times = session.times()
    return TimesRow(
        int(times.case_s),
        int(times.idle_s),
        session.activity.paused,
        session.activity.idle,
        {key: int(value) for key, value in times.structures.items()},
    )


def outbox_row(model) -> OutboxRow:
    failed = tuple(
        FailedSubmission(
            e.id,
            e.case_id,
            e.task_id,
            e.error_code or "",
            (e.error or {}).get("message", ""),
            tuple(str(f.get("message", "")) for f in e.failures),
            e.error_code == "lease_lost",
        )
        for e in model.failed
    )
    words = f"{model.pending} submission(s) waiting to be sent" if model.pending else ""
    if failed:
        words = ", ".join(w for w in (words, f"{len(failed)} refused: your decision") if w)
    return OutboxRow(model.pending, failed, words)


def task_actions(model) -> dict[str, Action]:
    connected = model.connection == CONNECTED
    busy = model.background.running(CASE_JOB) or model.background.running(CALL_JOB)
    current, session = model.current, model.session
    lost = current is not None and current.lease.lost is not None
    submitting = model.background.running(SUBMIT_JOB)
    gate = model.gate() if (model.gate and session is not None) else on()
    return {
        "connect": first_off((model.connection == CONNECTING, "connecting"), (connected, "connected")),
        "disconnect": first_off(
            (model.connection == DISCONNECTED, "not connected"),
            (current is not None, "finish or release the task first"),
        ),
        "select_project": first_off(
            (not connected, "connect to the server first"),
            (current is not None, "finish or release the task in hand first"),
        ),
        "next_task": first_off(
            (not connected, "connect to the server first"),
            (model.protocol is None, "choose a project"),
            (current is not None, "finish or release the task in hand first"),
            (busy, "a case is loading"),
        ),
        "submit": first_off(
            (session is None, "no case is open"),
            (submitting, "submitting"),
            (not gate.enabled, gate.reason),
        ),
        "release": first_off(
            (current is None, "no task in hand"),
            (busy or submitting, "busy"),
            (lost, "the lease is lost: nothing to release"),
        ),
        "skip": first_off(
            (current is None or current.kind != "annotate", "no case in hand"),
            (busy or submitting, "busy"),
            (lost, "the lease is lost: nothing to skip"),
        ),
        "claim_again": first_off(
            (not connected, "connect to the server first"),
            (not lost and not any(f.error_code == "lease_lost" for f in model.failed), "no lease was lost"),
            (busy or submitting, "busy"),
        ),
        "sync": first_off(
            (not connected, "connect to the server first"), (model.background.running(SYNC_JOB), "sending")
        ),
        "pause": first_off((session is None, "no case is open"), (bool(session and session.activity.paused), "paused")),
        "resume": first_off(
            (session is None, "no case is open"), (bool(session and not session.activity.paused), "counting")
        ),
    }


# ---- what the panel says about errors and the outbox ----


def error_text(error: BaseException) -> str:
    """What the panel says about a failed call: the server's words, plus what to do for the usual ones."""
    if isinstance(error, AuthError):
        return f"the server refused the token ({error.message}): ask for a new one"
    if isinstance(error, TlsError):
        return error.message
    if isinstance(error, Offline):
        return f"{error.message}; your work is kept and sent when the server answers"
    if isinstance(error, QueueError):
        return error.message
    return f"{type(error).__name__}: {error}"


def lost_from(entry: OutboxEntry):
    """The ``LeaseLost`` an outbox entry was refused with (what the lease would have found)."""
    error = error_from_answer(409, dict(entry.error or {}), "")
    error.case_id, error.task_id = entry.case_id, entry.task_id
    return error


def outbox_counts(client, outbox: Outbox) -> tuple[int, list[OutboxEntry]]:
    """In a job: how many submissions wait for this server, and the refused ones of this user."""
    failed = [e for e in outbox.entries(FAILED, client.url) if e.user in (None, client.user)]
    return outbox.pending_count(client.url), failed


def error_text_of(entry: OutboxEntry) -> str:
    return (entry.error or {}).get("message") or entry.state
