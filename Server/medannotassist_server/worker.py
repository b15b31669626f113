"""Workers that run the jobs table's jobs: threads inside ``medannot serve`` (``--job-threads``, default 1) and
``medannot worker`` processes, as many as wanted against one database. The server's only threads live here.

A worker takes one job at a time (``jobs.take``), heartbeats its lease from a helper thread while it runs,
and records a failure with its reason (retried after a backoff, failed for good after the last attempt).
Where the compute runs: in ``serve``, a new spawned process per job, so a crash or an out-of-memory kill
fails the job and not the server, its memory is returned when it ends, and requests never wait on the GIL
behind it; in ``medannot worker``, in the worker process itself; with ``--dask-scheduler ADDRESS``, on that
Dask cluster (its workers need this package and the data directory at the same path).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import threading
import time
import uuid

from sqlalchemy.exc import SQLAlchemyError

from . import consensus_step, jobs
from .audit import AuditChain, bind_key
from .blobs import BlobStore
from .db import Database, migrate
from .services import Services
from .settings import Settings, private_data_dir

log = logging.getLogger("medannotassist_server")

POLL_S = 0.5
RECONCILE_EVERY_S = 60.0
STALE_OUTPUT_S = 3600.0
# tests only: seconds a worker waits after taking a job, before its compute (a slow job on demand)
TEST_DELAY_ENV = "MEDANNOT_TEST_JOB_DELAY_S"


class WorkerStoppingError(Exception):
    """The worker was told to stop while it held a job: the job goes back to the queue."""


class ComputeError(Exception):
    """The compute failed elsewhere (a child process or a Dask worker); the message says why."""


# --- where the compute runs --------------------------------------------------------------------------------


class Inline:
    def __call__(self, arguments: dict, stop: threading.Event) -> dict:
        return consensus_step.compute_files(**arguments)

    def close(self) -> None:
        pass


def _child(connection, arguments: dict) -> None:
    try:
        connection.send(("ok", consensus_step.compute_files(**arguments)))
    except BaseException as error:  # reported to the parent, which fails the job with this reason
        connection.send(("error", f"{type(error).__name__}: {error}"))
    finally:
        connection.close()


class ChildProcess:
    """Each compute in a new spawned process (a fresh interpreter: no state shared with the server's)."""

    def __call__(self, arguments: dict, stop: threading.Event) -> dict:
        context = multiprocessing.get_context("spawn")
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(target=_child, args=(sender, arguments), name="medannot-consensus", daemon=True)
        process.start()
        sender.close()
        try:
            while not receiver.poll(0.2):
                if stop.is_set():
                    raise WorkerStoppingError
                if not process.is_alive() and not receiver.poll(0):
                    code = process.exitcode
                    why = (
                        f"killed by signal {-code}: out of memory?" if code is not None and code < 0 else f"code {code}"
                    )
                    raise ComputeError(f"the consensus process ended without a result ({why})")
            status, value = receiver.recv()
        finally:
            if process.is_alive():  # stopping, or the parent failed: the child's work is not wanted
                process.kill()
            process.join(10)
            receiver.close()
        if status == "error":
            raise ComputeError(value)
        return value

    def close(self) -> None:
        pass


class Dask:
    """The compute on a Dask distributed cluster (one client per worker, connected on first use)."""

    def __init__(self, address: str):
        self.address, self._client = address, None

    def __call__(self, arguments: dict, stop: threading.Event) -> dict:
        from dask.distributed import Client

        if self._client is None:
            try:
                self._client = Client(self.address, timeout="20s")
            except (OSError, TimeoutError) as error:
                raise ComputeError(f"the Dask scheduler at {self.address} did not answer: {error}") from None
        future = self._client.submit(
            consensus_step.compute_files, **arguments, key=f"medannot-consensus-{uuid.uuid4().hex}", pure=False
        )
        while True:
            try:
                return future.result(timeout=0.5)
            except TimeoutError:
                if stop.is_set():
                    future.cancel()
                    raise WorkerStoppingError from None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


# --- the worker ----------------------------------------------------------------------------------------------


def worker_name(role: str) -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{role}-{uuid.uuid4().hex[:6]}"


def short_error(error: BaseException, labels: dict[str, str], blobs: BlobStore) -> str:
    """The reason an admin sees: one line, the inputs by name (submission 12 (ann2)), no server paths."""
    text = str(error) if isinstance(error, ComputeError) else f"{type(error).__name__}: {error}"
    for path, label in sorted(labels.items(), key=lambda item: -len(item[0])):
        text = text.replace(path, label)
    for root in {str(blobs.root.resolve()), str(blobs.root)}:
        text = text.replace(root, "<blobs>")
    return " ".join(text.split()) or type(error).__name__


class Heartbeat:
    """Extends a held job's lease every third of its length, from a thread, while the job runs."""

    def __init__(self, database: Database, ticket: jobs.Ticket, worker: str, lease_s: float):
        self.database, self.ticket, self.worker, self.lease_s = database, ticket, worker, lease_s
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"medannot-heartbeat-{ticket.id}", daemon=True)

    def _beat(self) -> None:
        while not self._done.wait(self.lease_s / 3):
            try:
                if not jobs.heartbeat(self.database, self.ticket.id, self.worker, self.lease_s):
                    log.warning("job %s: its lease was lost (taken again by another worker)", self.ticket.id)
                    return
            except SQLAlchemyError as error:
                log.warning("job %s: heartbeat failed: %s", self.ticket.id, error)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._done.set()
        self._thread.join()


class Worker:
    def __init__(self, services: Services, compute, name: str, stop: threading.Event):
        self.services, self.compute, self.name, self.stop = services, compute, name, stop
        self.settings: Settings = services.settings

    def run(self, burst: bool = False) -> int:
        """Take and run jobs until told to stop (``burst``: until none is due); returns how many ran."""
        wake = threading.Event()
        jobs.listen(wake.set)
        ran, reconciled = 0, time.monotonic()
        try:
            while not self.stop.is_set():
                try:
                    if self.run_one():
                        ran += 1
                        continue
                    if burst:
                        break
                    if time.monotonic() - reconciled > RECONCILE_EVERY_S:
                        reconciled = time.monotonic()
                        consensus_step.reconcile(self.services)
                except SQLAlchemyError as error:  # the database is away: try again later
                    log.warning("worker %s: %s", self.name, error.__class__.__name__)
                    self.stop.wait(POLL_S * 10)
                except Exception:  # a bug must not end the thread: the jobs would stop with no one noticing
                    log.exception("worker %s", self.name)
                    self.stop.wait(POLL_S * 10)
                wake.wait(POLL_S)
                wake.clear()
        finally:
            jobs.unlisten(wake.set)
        return ran

    def run_one(self) -> bool:
        """Take one due job and run it; False when none was due."""
        settings, database = self.settings, self.services.database
        if not jobs.due(database):
            return False
        ticket = jobs.take(database, self.name, settings.job_lease_seconds, settings.job_max_attempts)
        if ticket is None:
            return False
        log.info("job %s (%s of case %s, round %s): attempt %s", ticket.id, ticket.kind, ticket.case_id,
                 ticket.round, ticket.attempts)  # fmt: skip
        labels: dict[str, str] = {}

        def compute(inputs: dict) -> dict:
            labels.update(inputs.pop("labels"))
            return self.compute(inputs, self.stop)

        started = time.perf_counter()
        with Heartbeat(database, ticket, self.name, settings.job_lease_seconds):
            try:
                delay = float(os.environ.get(TEST_DELAY_ENV) or 0)
                if delay and self.stop.wait(delay):
                    raise WorkerStoppingError
                consensus_step.advance(self.services, ticket, self.name, compute)
                log.info("job %s done in %.2f s", ticket.id, time.perf_counter() - started)
            except WorkerStoppingError:
                jobs.release(database, ticket, self.name)
                log.info("job %s handed back (worker stopping)", ticket.id)
            except Exception as error:  # every failure is the job's, never the worker's
                reason = short_error(error, labels, self.services.blobs)
                state = jobs.fail(
                    database, ticket, self.name, reason, settings.job_max_attempts, settings.job_retry_seconds
                )
                log.warning("job %s attempt %s failed (%s): %s", ticket.id, ticket.attempts, state, reason)
        return True


def remove_stale_outputs(blobs: BlobStore, older_than_s: float = STALE_OUTPUT_S) -> None:
    """Output folders a killed worker left in the blob store's tmp/ (old ones: another may be writing)."""
    cutoff = time.time() - older_than_s
    for folder in blobs.tmp.glob("consensus-*"):
        with contextlib.suppress(FileNotFoundError):
            if folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)


# --- inside the server, and as `medannot worker` -------------------------------------------------------------


class ServerWorkers:
    """The job threads of one server process, started and stopped with the app (its lifespan)."""

    def __init__(self, services: Services):
        settings = services.settings
        self.stop = threading.Event()
        self.compute = Dask(settings.dask_scheduler) if settings.dask_scheduler else ChildProcess()
        self.threads = [
            threading.Thread(
                target=Worker(services, self.compute, worker_name(f"serve{index}"), self.stop).run,
                name=f"medannot-jobs-{index}",
                daemon=True,
            )
            for index in range(max(0, settings.job_threads))
        ]
        if self.threads:
            remove_stale_outputs(services.blobs)
        for thread in self.threads:
            thread.start()

    def close(self, timeout_s: float = 15.0) -> None:
        self.stop.set()
        deadline = time.monotonic() + timeout_s
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.compute.close()


@contextlib.asynccontextmanager
async def lifespan(app):
    workers = ServerWorkers(app.state.services)
    try:
        yield
    finally:
        workers.close()


def run_worker(settings: Settings, burst: bool = False) -> int:
    """``medannot worker``: migrate (as every process that opens the database does), queue what a crash left,
    then take jobs until SIGTERM or SIGINT (the job in hand is finished first) or, with ``burst``, until none
    is due. Returns the number of jobs run."""
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    private_data_dir(settings)
    migrate(settings.url)
    services = Services(
        settings, Database(settings.url, AuditChain.from_settings(settings)), BlobStore(settings.blob_dir)
    )
    bind_key(services.database)  # consensus.create is audited: a worker needs the chain's key
    remove_stale_outputs(services.blobs)
    consensus_step.reconcile(services)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    compute = Dask(settings.dask_scheduler) if settings.dask_scheduler else Inline()
    name = worker_name("worker")
    where = f"Dask at {settings.dask_scheduler}" if settings.dask_scheduler else "this process"
    log.info("worker %s: taking jobs (compute in %s)", name, where)
    try:
        return Worker(services, compute, name, stop).run(burst)
    finally:
        compute.close()
        services.database.dispose()
