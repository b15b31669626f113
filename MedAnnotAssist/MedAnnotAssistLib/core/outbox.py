"""The durable outbox: a submission is kept on disk first, then sent, and dropped only once the server has
acknowledged it (201), so neither a network outage nor a crash nor a restart loses or duplicates it.

``Outbox(folder)`` is an SQLite file ``outbox.sqlite3`` and a ``files/`` folder in the user's settings folder
(``outbox/``; Slicer passes its own). ``enqueue`` copies the ``.seg.nrrd`` there (fsynced), records the
metadata, the server's URL (never the token), the project, task and lease, and an ``Idempotency-Key`` made
once, then commits (``synchronous=FULL``). ``deliver(client)`` sends what is due, oldest first, always with
that key: the server stores a submission once per key and answers a repeat with its first answer, so an
answer lost on the way (or a crash between the server's commit and ours) costs one resend, never a second
submission.

States: ``pending`` (waiting; after ``Offline`` or a 5xx it waits ``backoff_s`` doubling up to
``max_backoff_s``), ``sending``, ``delivered`` (the server's answer kept, the copy removed), ``failed`` (the
server refused it: protocol rules, lease lost, bad file; ``error`` holds its code, message and details;
the user decides: ``amend`` the metadata or file, ``retarget`` it at a new claim, or ``discard`` it). A
process that dies while sending leaves ``sending``: the next ``Outbox`` of that folder puts it back to
``pending`` (the key makes the resend safe).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
import uuid
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .queue_errors import AuthError, Offline, QueueError, ServerError
from .user_settings import settings_folder

PENDING, SENDING, DELIVERED, FAILED = "pending", "sending", "delivered", "failed"
KEEP_DELIVERED_S = 30 * 24 * 3600

SCHEMA = """
CREATE TABLE IF NOT EXISTS submissions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    server TEXT NOT NULL,
    user TEXT,
    project_id INTEGER NOT NULL,
    task_id INTEGER NOT NULL,
    case_id INTEGER,
    lease_id TEXT NOT NULL,
    filename TEXT NOT NULL,
    stored TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    metadata TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL CHECK (state IN ('pending', 'sending', 'delivered', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    error TEXT,
    response TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    delivered_at REAL
);
CREATE INDEX IF NOT EXISTS ix_submissions_state ON submissions (state, server, next_attempt_at);
"""


@dataclass(frozen=True)
class OutboxEntry:
    """One submission in the outbox (a row)."""

    id: int
    server: str
    user: str | None
    project_id: int
    task_id: int
    case_id: int | None
    lease_id: str
    filename: str
    file: Path
    sha256: str
    metadata: dict
    idempotency_key: str
    state: str
    attempts: int
    next_attempt_at: float
    error: dict | None
    response: dict | None
    created_at: float
    updated_at: float
    delivered_at: float | None

    @property
    def needs_user(self) -> bool:
        """The server refused it: only the user can decide what to do (``error`` says why)."""
        return self.state == FAILED

    @property
    def error_code(self) -> str | None:
        return (self.error or {}).get("code")

    @property
    def failures(self) -> list[dict]:
        """The failing protocol rules of a ``protocol_rules_failed`` refusal (structure, rule, message ...)."""
        return list((self.error or {}).get("failures", []))


@dataclass
class Delivery:
    """What one ``deliver`` did. ``stopped``: the error that ended it early (``Offline``: the server is not
    reachable; ``AuthError``: the token is refused); the entries not tried stay ``pending``."""

    delivered: list[OutboxEntry] = field(default_factory=list)
    waiting: list[OutboxEntry] = field(default_factory=list)
    failed: list[OutboxEntry] = field(default_factory=list)
    stopped: QueueError | None = None

    @property
    def offline(self) -> bool:
        return isinstance(self.stopped, Offline)


class Outbox:
    def __init__(
        self, folder: Path | None = None, backoff_s: float = 5.0, max_backoff_s: float = 300.0, clock=time.time
    ):
        self.folder = Path(folder) if folder is not None else settings_folder() / "outbox"
        self.files = self.folder / "files"
        self.files.mkdir(parents=True, exist_ok=True, mode=0o700)
        for path in (self.folder, self.files):
            path.chmod(0o700)  # readers' segmentations: the user's alone
        self.database = self.folder / "outbox.sqlite3"
        self.backoff_s, self.max_backoff_s, self.clock = backoff_s, max_backoff_s, clock
        with closing(self._connect()) as connection:
            connection.executescript(SCHEMA)
        self._resume()

    # -- adding and reading ---------------------------------------------------------------------------------
    def enqueue(
        self, server: str, project_id: int, task: dict, segmentation: Path, metadata: dict, user: str | None = None
    ) -> OutboxEntry:
        """Keep a submission of ``task`` (as claimed: ``id``, ``lease_id``, ``case_id``) for ``server`` (the
        client's ``url``) and ``user`` (the client's ``user``, when known: only that user's client sends it)."""
        source = Path(segmentation)
        if not source.is_file():
            raise FileNotFoundError(f"outbox: the segmentation {source} does not exist")
        if not task.get("lease_id"):
            raise ValueError(f"outbox: task {task.get('id')} has no lease_id (pass the task as claimed)")
        try:
            text = json.dumps(metadata, allow_nan=False)
        except (TypeError, ValueError) as error:
            raise ValueError(f"outbox: the metadata of {source.name} is not JSON: {error}") from None
        key = f"medannot-{uuid.uuid4().hex}"
        stored, sha256 = self._keep_file(source, key)
        now = self.clock()
        try:
            with self._transaction() as connection:
                cursor = connection.execute(
                    "INSERT INTO submissions (server, user, project_id, task_id, case_id, lease_id, filename, stored,"
                    " sha256, metadata, idempotency_key, state, created_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (server, user, int(project_id), int(task["id"]), task.get("case_id"), task["lease_id"],
                     source.name, stored.name, sha256, text, key, PENDING, now, now),
                )  # fmt: skip
                entry_id = cursor.lastrowid
        except BaseException:
            stored.unlink(missing_ok=True)
            raise
        return self.get(entry_id)

    def get(self, entry_id: int) -> OutboxEntry | None:
        with closing(self._connect()) as connection:
            row = connection.execute("SELECT * FROM submissions WHERE id = ?", (int(entry_id),)).fetchone()
        return self._entry(row) if row else None

    def entries(self, state: str | None = None, server: str | None = None) -> list[OutboxEntry]:
        query, params = "SELECT * FROM submissions WHERE 1 = 1", []
        if state:
            query, params = query + " AND state = ?", [*params, state]
        if server:
            query, params = query + " AND server = ?", [*params, server]
        with closing(self._connect()) as connection:
            return [self._entry(row) for row in connection.execute(query + " ORDER BY id", params)]

    def pending_count(self, server: str | None = None) -> int:
        """Submissions not yet acknowledged and not refused (the panel's outbox count)."""
        return sum(1 for entry in self.entries(server=server) if entry.state in (PENDING, SENDING))

    def seconds_until_due(self, server: str | None = None) -> float | None:
        """When the next pending submission may be tried (0: now); None when none waits."""
        due = [e.next_attempt_at for e in self.entries(PENDING, server)]
        return max(min(due) - self.clock(), 0.0) if due else None

    # -- sending ----------------------------------------------------------------------------------------
    def deliver(self, client, force: bool = False, only: set[int] | None = None) -> Delivery:
        """Send the pending submissions for ``client.url`` whose backoff is over (all of them with ``force``:
        at start, or when the user presses Retry), oldest first. Never raises for a server's refusal or an
        outage: see the ``Delivery``."""
        report = Delivery()
        now = self.clock()
        due = [
            entry
            for entry in self.entries(PENDING, client.url)
            if (force or entry.next_attempt_at <= now) and (only is None or entry.id in only)
        ]
        if any(entry.user for entry in due) and client.user is None:
            try:
                client.me()
            except QueueError as error:  # offline, a refused token, a TLS setting: nothing can be sent now
                report.stopped = error
                return report
        for entry in due:
            if entry.user and entry.user != client.user:
                continue  # another user's, on this machine: sent with their token
            if not self._mark(entry.id, PENDING, SENDING):
                continue  # another process took it
            outcome = self._send(client, entry)
            if isinstance(outcome, dict):
                report.delivered.append(self._delivered(entry, outcome))
            elif isinstance(outcome, (Offline, ServerError)):
                report.waiting.append(self._later(entry, outcome))
                if isinstance(outcome, Offline):
                    report.stopped = outcome
                    break
            elif isinstance(outcome, AuthError):
                self._mark(entry.id, SENDING, PENDING)  # the token's fault, not the submission's
                report.stopped = outcome
                break
            else:
                report.failed.append(self._failed(entry, outcome))
        return report

    def send(self, client, entry_id: int) -> OutboxEntry:
        """Deliver this one now (after ``enqueue``, or Retry on it); the entry as it is afterwards."""
        self.deliver(client, force=True, only={int(entry_id)})
        return self.get(entry_id)

    def _send(self, client, entry: OutboxEntry):
        """The server's answer (a dict) or the error (returned, not raised)."""
        try:
            if not entry.file.is_file() or _sha256(entry.file) != entry.sha256:
                return QueueError(
                    f"the outbox copy {entry.file} of {entry.filename} is missing or was changed",
                    code="outbox_file_damaged",
                )
            return client.submit(
                entry.project_id,
                entry.task_id,
                entry.lease_id,
                entry.file,
                json.dumps(entry.metadata, allow_nan=False),
                entry.idempotency_key,
                filename=entry.filename,
            )
        except QueueError as error:
            return error
        except BaseException:
            self._mark(entry.id, SENDING, PENDING)
            raise

    # -- the user's decisions on a refused submission --------------------------------------------------------
    def amend(self, entry_id: int, metadata: dict | None = None, segmentation: Path | None = None) -> OutboxEntry:
        """New metadata (overrides with reasons) and/or a corrected file for a refused submission: pending
        again under a new Idempotency-Key (new content)."""
        entry = self._refused(entry_id)
        text = json.dumps(metadata if metadata is not None else entry.metadata, allow_nan=False)
        key = f"medannot-{uuid.uuid4().hex}"
        stored, sha256 = (entry.file, entry.sha256)
        if segmentation is not None:
            stored, sha256 = self._keep_file(Path(segmentation), key)
        with self._transaction() as connection:
            connection.execute(
                "UPDATE submissions SET metadata = ?, stored = ?, sha256 = ?, filename = ?, idempotency_key = ?,"
                " state = ?, error = NULL, attempts = 0, next_attempt_at = 0, updated_at = ? WHERE id = ?",
                (text, stored.name, sha256, Path(segmentation).name if segmentation else entry.filename, key,
                 PENDING, self.clock(), entry.id),
            )  # fmt: skip
        if segmentation is not None:
            entry.file.unlink(missing_ok=True)
        return self.get(entry.id)

    def retarget(self, entry_id: int, task: dict) -> OutboxEntry:
        """After ``lease_lost``: send the kept work with a new claim's task and lease (``claim_again``); pending
        again under a new Idempotency-Key (the server keys by task too)."""
        entry = self._refused(entry_id)
        if not task.get("lease_id"):
            raise ValueError(f"outbox: task {task.get('id')} has no lease_id (pass the task as claimed)")
        with self._transaction() as connection:
            connection.execute(
                "UPDATE submissions SET task_id = ?, case_id = ?, lease_id = ?, idempotency_key = ?, state = ?,"
                " error = NULL, attempts = 0, next_attempt_at = 0, updated_at = ? WHERE id = ?",
                (int(task["id"]), task.get("case_id", entry.case_id), task["lease_id"],
                 f"medannot-{uuid.uuid4().hex}", PENDING, self.clock(), entry.id),
            )  # fmt: skip
        return self.get(entry.id)

    def discard(self, entry_id: int) -> None:
        """The user gives a submission up: its row and its copy go."""
        entry = self.get(entry_id)
        if entry is None:
            return
        if entry.state in (PENDING, SENDING):
            raise ValueError(f"outbox entry {entry_id} is {entry.state}: only a refused or delivered one is discarded")
        with self._transaction() as connection:
            connection.execute("DELETE FROM submissions WHERE id = ?", (entry.id,))
        entry.file.unlink(missing_ok=True)

    # -- state changes ------------------------------------------------------------------------------------
    def _refused(self, entry_id: int) -> OutboxEntry:
        entry = self.get(entry_id)
        if entry is None or entry.state != FAILED:
            state = entry.state if entry else "not in the outbox"
            raise ValueError(f"outbox entry {entry_id}: only a refused submission can be changed (it is {state})")
        return entry

    def _mark(self, entry_id: int, before: str, after: str) -> bool:
        with self._transaction() as connection:
            changed = connection.execute(
                "UPDATE submissions SET state = ?, updated_at = ? WHERE id = ? AND state = ?",
                (after, self.clock(), entry_id, before),
            ).rowcount
        return changed == 1

    def _delivered(self, entry: OutboxEntry, response: dict) -> OutboxEntry:
        now = self.clock()
        with self._transaction() as connection:
            connection.execute(
                "UPDATE submissions SET state = ?, response = ?, error = NULL, attempts = attempts + 1,"
                " delivered_at = ?, updated_at = ? WHERE id = ?",
                (DELIVERED, json.dumps(response), now, now, entry.id),
            )
        entry.file.unlink(missing_ok=True)  # only now: the server holds it
        return self.get(entry.id)

    def _later(self, entry: OutboxEntry, error: QueueError) -> OutboxEntry:
        attempts = entry.attempts + 1
        wait = min(self.backoff_s * 2 ** (attempts - 1), self.max_backoff_s)
        if isinstance(error, ServerError) and error.retry_after:
            wait = max(wait, min(error.retry_after, self.max_backoff_s))
        with self._transaction() as connection:
            connection.execute(
                "UPDATE submissions SET state = ?, attempts = ?, next_attempt_at = ?, error = ?, updated_at = ?"
                " WHERE id = ?",
                (PENDING, attempts, self.clock() + wait, json.dumps(error.to_dict()), self.clock(), entry.id),
            )
        return self.get(entry.id)

    def _failed(self, entry: OutboxEntry, error: QueueError) -> OutboxEntry:
        with self._transaction() as connection:
            connection.execute(
                "UPDATE submissions SET state = ?, attempts = attempts + 1, error = ?, updated_at = ? WHERE id = ?",
                (FAILED, json.dumps(error.to_dict(), default=str), self.clock(), entry.id),
            )
        return self.get(entry.id)

    def _resume(self) -> None:
        """At start: a send cut by a crash goes back to pending; copies no row refers to go (a crash between
        copying and recording, or between the acknowledgement and removing the copy); old history goes."""
        with self._transaction() as connection:
            connection.execute("UPDATE submissions SET state = ? WHERE state = ?", (PENDING, SENDING))
            connection.execute(
                "DELETE FROM submissions WHERE state = ? AND delivered_at < ?",
                (DELIVERED, self.clock() - KEEP_DELIVERED_S),
            )
            rows = connection.execute("SELECT stored FROM submissions WHERE state != ?", (DELIVERED,))
            kept = {row[0] for row in rows}
        hour_ago = time.time() - 3600
        for path in self.files.iterdir():
            # a copy in progress (.part) is another process's for a moment: only old ones are leftovers
            if path.name not in kept and (not path.name.startswith(".") or path.stat().st_mtime < hour_ago):
                path.unlink(missing_ok=True)

    # -- storage -------------------------------------------------------------------------------------------
    def _keep_file(self, source: Path, key: str) -> tuple[Path, str]:
        """Copy ``source`` into ``files/`` durably (temporary, fsync, rename, fsync of the folder)."""
        final = self.files / f"{key}.seg.nrrd"
        temporary = self.files / f".{key}.part"
        digest = hashlib.sha256()
        try:
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with open(descriptor, "wb") as out, open(source, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    out.write(block)
                    digest.update(block)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, final)
        finally:
            temporary.unlink(missing_ok=True)
        _fsync_folder(self.files)
        return final, digest.hexdigest()

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.database, timeout=30, isolation_level=None)
        connection.row_factory = sqlite3.Row
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = FULL")  # a commit is on disk before enqueue returns
        return connection

    @contextmanager
    def _transaction(self):
        with closing(self._connect()) as connection:
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")

    def _entry(self, row: sqlite3.Row) -> OutboxEntry:
        values = dict(row)
        values["file"] = self.files / values.pop("stored")
        values["metadata"] = json.loads(values["metadata"])
        values["error"] = json.loads(values["error"]) if values["error"] else None
        values["response"] = json.loads(values["response"]) if values["response"] else None
        return OutboxEntry(**values)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
