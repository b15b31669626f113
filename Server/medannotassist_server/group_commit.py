"""Group commit: one writer thread per server process commits the claims, heartbeats and releases waiting at
that moment in one transaction, with one audit append per event (chained in the order they came) and one
commit, so one fsync serves a whole batch instead of one request. Each request is answered only after its
batch committed; an operation that refuses (a lost lease, a missing role) changed nothing and the others
commit. A batch that fails otherwise is rolled back and its operations run again one per transaction, so
one bad operation fails alone; a commit whose outcome is unknown (the database went away during it) is
answered 503 to all, never acknowledged.

Tokens and roles are looked up in the batch's transaction, or taken from ``AccessCache`` while the auth
epoch read in that same transaction is unchanged: a revocation or role change committed before a batch
begins is seen by it, in every process.

Durability (``--durability``): ``full`` (the default) commits every batch durably (SQLite
``synchronous=FULL``; PostgreSQL's synchronous commit). ``relaxed`` commits lease batches without waiting
for the disk; a durable barrier follows within ``SYNC_S`` (and before any audit checkpoint names their
rows), and any durable commit after them (a submission) makes them durable too, as both databases write
their log in order. A power loss can then lose the lease grants, heartbeats and releases of the last
fraction of a second, never a submission or a decision: a lost grant's lease id is unknown afterwards, so
its client is told ``lease_lost``.

Threads of the server live here, in ``worker`` and in ``audit_keys``. The event loop never blocks on the
database for these requests: it queues the operation and awaits its future.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session

from . import audit, claims
from .auth import _ACCESS, _PROJECT_EXISTS, AccessCache, ProjectAccess, access_of, checked
from .db import Database, busy
from .driver_sql import Statements, read_time
from .errors import ApiError

log = logging.getLogger("medannotassist_server")

DURABILITY = ("full", "relaxed")
MAX_BATCH = 256
MAX_WAIT_S = 0.002
SYNC_S = 0.5  # relaxed: the longest a committed lease change waits for its durable barrier
# tests only: seconds a batch waits between its statements and its commit (a SIGKILL then lands inside one)
TEST_DELAY_ENV = "MEDANNOT_TEST_COMMIT_DELAY_S"
_EPOCH = text("SELECT epoch FROM auth_epoch WHERE id = 1")
_BARRIER = text("UPDATE auth_epoch SET epoch = epoch WHERE id = 1")
# one statement for a batch's claimers: unnest returns them, and the locks are taken, in the array's order
_ADVISORY = "SELECT pg_advisory_xact_lock(%s, u) FROM unnest(%s::integer[]) AS u"
_STOP = object()


class CommitUnknownError(Exception):
    """The commit was sent but its outcome is unknown: nothing of the batch may be acknowledged."""


@dataclass(eq=False)
class Op:
    """One request for the writer: ``name`` (claim, heartbeat, release), the caller's token hash and project,
    the arguments, and a request error found before authentication (raised after it, as FastAPI orders them)."""

    name: str
    token_hash: str
    project_id: int
    args: tuple
    invalid: Exception | None = None
    loop: asyncio.AbstractEventLoop | None = None
    future: asyncio.Future | None = None
    done: threading.Event | None = None
    outcome: object = None
    failed: bool = False
    settled: bool = False
    access: ProjectAccess | ApiError | None = field(default=None, repr=False)


class Tx:
    """A writer transaction as ``claims`` sees it: driver statements, and its audit events (``connection``:
    the same transaction for SQLAlchemy, for steps run in a session). On PostgreSQL each statement gets a
    cursor of its own, so that a pipeline keeps every statement's answer."""

    __slots__ = ("connection", "raw", "cursor", "postgres", "events", "statements")

    def __init__(self, connection, raw, postgres: bool, statements: Statements):
        self.connection, self.raw, self.postgres, self.statements = connection, raw, postgres, statements
        self.cursor = raw.cursor()
        self.events: list[tuple] = []

    def run(self, statement, params: dict):
        return self.statements(statement).execute(self.raw.cursor() if self.postgres else self.cursor, params)

    def record(self, event: tuple) -> None:
        self.events.append(event)


class GroupCommit:
    """The writer of one process. ``await call(op)`` from the event loop, ``call_sync(op)`` from a thread."""

    def __init__(self, database: Database, durability: str = "full", max_batch: int = 64, wait_ms: float = 0.5):
        if durability not in DURABILITY:
            raise ValueError(f"durability must be one of {', '.join(DURABILITY)}, got {durability!r}")
        self.database = database
        self.relaxed = durability == "relaxed"
        self.max_batch = max(1, min(max_batch, MAX_BATCH))
        self.wait_s = max(0.0, min(wait_ms / 1000, MAX_WAIT_S))
        self.cache = AccessCache()
        self.statements = Statements(database.engine.dialect)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._held = None  # PostgreSQL: the writer keeps its connection between batches
        self._unsynced: dict[int, audit.Head] = {}  # relaxed: heads committed but not yet known durable
        self._unsynced_since = 0.0
        self._last_batch = 0
        self._test_delay_s = float(os.environ.get(TEST_DELAY_ENV) or 0)

    # --- the callers' side -----------------------------------------------------------------------------

    async def call(self, op: Op):
        loop = asyncio.get_running_loop()
        op.loop, op.future = loop, loop.create_future()
        self._put(op)
        return await op.future

    def write(self, step):
        """Run ``step(session)`` in the next batch's transaction (in a savepoint of its own, so its failure
        undoes only its own writes) and return its result once the batch committed; ``record``ed audit
        events are appended with the batch's. From a thread, never the event loop."""
        return self.call_sync(Op("session", None, 0, (step,)))

    def call_sync(self, op: Op):
        op.done = threading.Event()
        self._put(op)
        op.done.wait()
        if op.failed:
            raise op.outcome
        return op.outcome

    def _put(self, op: Op) -> None:
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._serve, name="medannot-group-commit", daemon=True)
                    self._thread.start()
        self._queue.put(op)

    def close(self) -> None:
        """Answer what is queued, make relaxed commits durable, and stop the thread."""
        with self._start_lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(_STOP)
            thread.join(30)
        if self._held is not None:
            self._held.close()
            self._held = None

    # --- the writer thread ------------------------------------------------------------------------------

    def _serve(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=SYNC_S / 2 if self._unsynced else None)
            except queue.Empty:
                self._sync_if_due()
                continue
            batch, stop = self._gather(first)
            try:
                if batch:
                    self._run(batch)
                self._sync_if_due()
            except BaseException as error:  # a bug here must not leave every later request waiting forever
                log.exception("group commit")
                self._settle([op for op in batch if not op.settled], error)
            if stop:
                self._sync(force=True)
                return

    def _gather(self, first) -> tuple[list[Op], bool]:
        """The operations waiting now (up to ``max_batch``); under load (the last batch had company) wait up
        to ``wait_s`` for more."""
        if first is _STOP:
            return [], True
        batch, deadline = [first], None
        while len(batch) < self.max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                if self.wait_s <= 0 or self._last_batch < 2:
                    break
                deadline = deadline or time.monotonic() + self.wait_s
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
            if item is _STOP:
                return batch, True
            batch.append(item)
        return batch, False

    def _run(self, batch: list[Op]) -> None:
        self._last_batch = len(batch)
        try:
            outcomes, heads, relaxed = self._transaction(batch)
        except CommitUnknownError as error:
            log.error("a group commit of %d operations failed during the commit: %s", len(batch), error.__cause__)
            cause = error.__cause__ if isinstance(error.__cause__, OperationalError) else busy()
            self._settle(batch, [(cause, True)] * len(batch))
            return
        except Exception as error:  # before the commit: nothing of it was written
            if len(batch) == 1:
                self._settle(batch, [(error, True)])
                return
            log.warning("a group commit of %d operations failed (%s); running them one by one", len(batch), error)
            for op in batch:
                self._run([op])
            return
        # committed: nothing from here on may send the batch round again
        self._committed(heads, relaxed)
        self._settle(batch, outcomes)

    def _committed(self, heads: list[audit.Head], relaxed: bool) -> None:
        if relaxed:
            self._unsynced_since = self._unsynced_since if self._unsynced else time.monotonic()
            self._unsynced.update({head.chain: head for head in heads})
            return
        earlier, self._unsynced = self._unsynced, {}  # durable, and so is every commit before it
        heads = list((earlier | {head.chain: head for head in heads}).values())
        if heads:
            self.database.chain.committed(heads)

    def _connection(self):
        if not self.database.is_sqlite:
            if self._held is None:
                self._held = self.database.engine.connect()
            return self._held
        # SQLite: the process's one write connection, shared in turn with every other writer of the process
        try:
            return self.database.write_engine.connect()
        except PoolTimeoutError:
            raise busy() from None

    def _transaction(self, batch: list[Op]) -> tuple[list, list[audit.Head], bool]:
        """One transaction of the batch: (outcomes, new audit heads, committed relaxed)."""
        connection = self._connection()
        sqlite = self.database.is_sqlite
        raw = connection.connection.driver_connection
        # a session step (a submission) is durable whatever the setting: its batch, and what came before it
        relaxed = self.relaxed and all(op.name != "session" for op in batch)
        try:
            if sqlite and relaxed:
                raw.execute("PRAGMA synchronous=NORMAL")
            transaction = connection.begin()
            tx = Tx(connection, raw, not sqlite, self.statements)
            try:
                outcomes = self._apply(tx, batch, relaxed)
                heads = audit.append(connection, self.database.chain, tx.events)
            except BaseException:
                transaction.rollback()
                raise
            if self._test_delay_s:
                time.sleep(self._test_delay_s)
            try:
                transaction.commit()
            except Exception as error:
                raise CommitUnknownError(str(error)) from error
        except Exception:
            if not sqlite and self._held is not None:
                self._held.invalidate()
                self._held.close()
                self._held = None
            raise
        finally:
            if sqlite:
                _give_back(connection, raw, relaxed)
        return outcomes, heads, relaxed

    def _apply(self, tx: Tx, batch: list[Op], relaxed: bool) -> list[tuple[object, bool]]:
        if relaxed and tx.postgres:
            tx.cursor.execute("SET LOCAL synchronous_commit TO OFF")
        row = tx.cursor.execute(str(_EPOCH)).fetchone()
        self.cache.sync(row[0] if row is not None else None)
        now = time.monotonic()
        for op in batch:
            if op.token_hash is None:
                continue  # a session step: its request was authenticated by its endpoint
            try:
                op.access = self._access(tx, op, now)
            except ApiError as refused:
                op.access = refused
        # PostgreSQL without session steps: every statement sent before any answer is read (one round trip)
        if tx.postgres and all(op.name != "session" for op in batch):
            with tx.raw.pipeline() as pipeline:
                started = self._send(tx, batch, pipelined=True)
                pipeline.sync()
                return [self._finish(item) for item in started]
        return [self._finish(item) for item in self._send(tx, batch, pipelined=False)]

    def _send(self, tx: Tx, batch: list[Op], pipelined: bool) -> list:
        if tx.postgres:  # one reader's claims one at a time, across replicas; in id order, so never in a circle
            claimers = sorted({op.access.caller.id for op in batch if op.name == "claim" and not _refused(op)})
            if claimers:
                tx.raw.cursor().execute(_ADVISORY, (claims.CLAIM_LOCK_KEY, claimers))
        return [self._start(tx, op, pipelined) for op in batch]

    @staticmethod
    def _start(tx: Tx, op: Op, pipelined: bool):
        """An operation sent (pipelined: up to its first yield; else to its end): a running generator, or
        its outcome."""
        if _refused(op) or op.invalid is not None:
            return (op.access if _refused(op) else op.invalid, True)
        try:
            operation = _OPERATIONS[op.name](tx, op)
            if not pipelined:
                return (claims.run(operation), False)
            next(operation)
            return operation
        except StopIteration as done:
            return (done.value, False)
        except ApiError as refused:  # a refusal changes nothing: the batch goes on
            return (refused, True)
        except _StepFailedError as failed:  # rolled back to its savepoint: the batch goes on
            return (failed.__cause__, True)

    @staticmethod
    def _finish(item) -> tuple[object, bool]:
        if isinstance(item, tuple):
            return item
        try:
            return (claims.run(item), False)
        except ApiError as refused:
            return (refused, True)

    def _access(self, tx: Tx, op: Op, now: float) -> ProjectAccess:
        key = (op.token_hash, op.project_id)
        found = self.cache.get(key, now)
        if found is None:
            params = {"token_hash": op.token_hash, "project_id": op.project_id}
            rows = [(*r[:2], read_time(r[2]), *r[3:]) for r in tx.run(_ACCESS, params).fetchall()]
            found = access_of(rows, op.project_id, lambda: tx.run(_PROJECT_EXISTS, params).fetchone() is not None)
            self.cache.put(key, now, found)
        return checked(*found)

    def _settle(self, batch: list[Op], outcomes: list[tuple[object, bool]] | BaseException) -> None:
        if isinstance(outcomes, BaseException):
            outcomes = [(outcomes, True)] * len(batch)
        by_loop: dict[asyncio.AbstractEventLoop, list[Op]] = {}
        for op, (outcome, failed) in zip(batch, outcomes, strict=True):
            op.outcome, op.failed, op.access, op.settled = outcome, failed, None, True
            if op.done is not None:
                op.done.set()
            else:
                by_loop.setdefault(op.loop, []).append(op)
        for loop, ops in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits for these answers any more
                loop.call_soon_threadsafe(_resolve, ops)

    # --- relaxed durability -------------------------------------------------------------------------------

    def _sync_if_due(self) -> None:
        if self._unsynced and time.monotonic() - self._unsynced_since >= SYNC_S:
            self._sync()

    def _sync(self, force: bool = False) -> None:
        """A durable commit after the relaxed ones: both databases write their log in order, so it makes
        every earlier commit durable; only then may a checkpoint name their rows."""
        if not self._unsynced or not (force or self.relaxed):
            return
        try:
            with self.database.writing() as session:
                session.execute(_BARRIER)
        except Exception as error:  # retried at the next batch or wake-up; the checkpoints wait meanwhile
            log.warning("durable barrier after relaxed commits failed: %s", error)
            return
        heads, self._unsynced = list(self._unsynced.values()), {}
        self.database.chain.committed(heads)


def _give_back(connection, raw, relaxed: bool) -> None:
    """Return SQLite's write connection to the pool as every other writer expects it (``synchronous=FULL``);
    never raises: after a commit, an error here must not send the batch round again."""
    try:
        if relaxed:
            raw.execute("PRAGMA synchronous=FULL")
    except Exception:  # a connection that may still be relaxed is not given to a submission: it is dropped
        log.exception("restoring synchronous=FULL")
        with contextlib.suppress(Exception):
            connection.invalidate()
    with contextlib.suppress(Exception):
        connection.close()


def _refused(op: Op) -> bool:
    return isinstance(op.access, ApiError)


def _resolve(ops: list[Op]) -> None:
    for op in ops:
        if op.future.done():  # the request was cancelled (its client went away)
            continue
        if op.failed:
            op.future.set_exception(op.outcome)
        else:
            op.future.set_result(op.outcome)


def _claim(tx: Tx, op: Op):
    kind, lease_seconds = op.args
    access = op.access
    kinds = claims.claim_kinds(access, kind)
    return {"task": (yield from claims.claim(tx, access.caller, op.project_id, kinds, lease_seconds))}


def _heartbeat(tx: Tx, op: Op):
    task_id, lease_id, lease_seconds = op.args
    return (yield from claims.heartbeat(tx, op.access.caller, op.project_id, task_id, lease_id, lease_seconds))


def _release(tx: Tx, op: Op):
    task_id, lease_id, reason = op.args
    return (yield from claims.release(tx, op.access.caller, op.project_id, task_id, lease_id, reason))


class _StepFailedError(Exception):
    """A session step failed and its savepoint was rolled back (its cause goes to its caller)."""


def _session(tx: Tx, op: Op):
    """A step in a session, run at once (never pipelined: a batch with one runs its statements one by one)."""
    yield from ()
    (step,) = op.args
    session = Session(bind=tx.connection, join_transaction_mode="create_savepoint", expire_on_commit=False)
    try:
        try:
            with session.begin():
                result = step(session)
                events = session.info.pop(audit.PENDING, [])
        except ApiError:
            raise
        except Exception as error:
            if not tx.connection.in_transaction():
                raise  # the transaction itself is gone: the batch fails
            raise _StepFailedError from error
    finally:
        session.close()
    tx.events.extend(events)
    return result


_OPERATIONS = {"claim": _claim, "heartbeat": _heartbeat, "release": _release, "session": _session}
