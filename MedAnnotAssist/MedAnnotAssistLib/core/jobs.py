"""Background work with progress and cancel: the only module that starts threads or processes.

Slicer's GUI thread must never run HTTP or heavy compute. The widget submits a function here and polls
the returned ``Job`` with a QTimer (``job.progress``, ``job.done()``); MRML is touched only on the main
thread, after ``job.result()``. Long functions take two keyword arguments: ``progress(fraction,
message)`` to report and ``cancel()`` to ask whether the user pressed Cancel (they then raise
``CancelledError`` from ``check_cancel``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor

ProgressCallback = Callable[[float, str], None]
CancelCallback = Callable[[], bool]


class CancelledError(Exception):
    """The user cancelled the work; nothing half-done was kept."""


def check_cancel(cancel: CancelCallback | None, what: str = "the work") -> None:
    if cancel is not None and cancel():
        raise CancelledError(f"{what} was cancelled")


def no_progress(fraction: float, message: str = "") -> None:
    """A progress callback that ignores the report."""


class Job:
    """One submitted function: thread-safe progress, a cancel flag and the future of its result."""

    def __init__(self, name: str):
        self.name = name
        self._lock = threading.Lock()
        self._fraction = 0.0
        self._message = "waiting"
        self._cancel = threading.Event()
        self.future: Future | None = None

    def report(self, fraction: float, message: str = "") -> None:
        with self._lock:
            self._fraction = min(max(float(fraction), 0.0), 1.0)
            self._message = message

    @property
    def progress(self) -> tuple[float, str]:
        with self._lock:
            return self._fraction, self._message

    def cancel(self) -> None:
        self._cancel.set()
        if self.future is not None:
            self.future.cancel()  # not started yet: never starts

    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def done(self) -> bool:
        return self.future is not None and self.future.done()

    def result(self, timeout: float | None = None):
        return self.future.result(timeout)

    def exception(self, timeout: float | None = None):
        return self.future.exception(timeout)


class JobRunner:
    """A small pool of worker threads for engine runs, server calls and consensus computations."""

    def __init__(self, workers: int = 1, name: str = "medannot"):
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)

    def submit(self, name: str, function: Callable, *args, **kwargs) -> Job:
        """Run ``function(*args, progress=job.report, cancel=job.cancelled, **kwargs)`` in a worker."""
        job = Job(name)
        job.future = self._pool.submit(function, *args, progress=job.report, cancel=job.cancelled, **kwargs)
        return job

    def shutdown(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=True)


class Periodic:
    """``function()`` every ``interval_s`` seconds on its own daemon thread, from ``start()`` until ``stop()`` or
    until it returns False. An exception does not end the loop (the next call may succeed: the network comes
    back); the last one is kept in ``last_error``. ``interval_s`` may be a function giving the next wait."""

    def __init__(self, name: str, function: Callable[[], object], interval_s, first_after_s: float | None = None):
        self.name, self.function = name, function
        self._interval = interval_s if callable(interval_s) else (lambda: float(interval_s))
        self._first = first_after_s
        self._stop, self._wake = threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None
        self.calls = 0
        self.last_error: BaseException | None = None

    def start(self) -> Periodic:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
            self._thread.start()
        return self

    def run_now(self) -> None:
        """Call the function now instead of at the end of the current wait (the user pressed Retry)."""
        self._wake.set()

    def stop(self, wait: bool = True, timeout: float | None = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        if wait and self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _loop(self) -> None:
        wait = self._interval() if self._first is None else self._first
        while not self._stop.is_set():
            self._wake.wait(max(wait, 0.0))
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                keep_going = self.function()
                self.last_error = None
            except Exception as error:  # kept for the panel; the loop goes on
                keep_going, self.last_error = True, error
            self.calls += 1
            if keep_going is False:
                break
            wait = self._interval()


class Heartbeat(Periodic):
    """Keeps a lease alive: ``lease.beat()`` every ``lease.interval_s`` seconds until it returns False (the
    lease was lost or released) or ``stop()`` (see ``core.lease.Lease``)."""

    def __init__(self, lease, name: str = "heartbeat"):
        super().__init__(name, lease.beat, lambda: lease.interval_s, first_after_s=lease.interval_s)
        self.lease = lease


_PREFETCH: list[ThreadPoolExecutor] = []
_PREFETCH_LOCK = threading.Lock()


def prefetch(name: str, function: Callable, *args, **kwargs) -> Job:
    """Download ahead (the next task's image): ``function(*args, progress=, cancel=, **kwargs)`` on the one
    prefetch worker thread, in order, apart from the panel's own jobs. Only a head start: its failure is kept
    in the job (``job.exception()``) and the real load fetches again."""
    with _PREFETCH_LOCK:
        if not _PREFETCH:
            _PREFETCH.append(ThreadPoolExecutor(max_workers=1, thread_name_prefix="medannot-prefetch"))
    job = Job(name)
    job.future = _PREFETCH[0].submit(function, *args, progress=job.report, cancel=job.cancelled, **kwargs)
    return job


def run_in_child_process(function: Callable, *args, **kwargs):
    """Run a picklable function in a fresh child process (for engines that hold the GIL or much memory)
    and return its result; its exceptions are raised here."""
    import multiprocessing

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args, **kwargs).result()


class BatchOutcome:
    """One case of a batch: its name, the function's result or the error that stopped it, and seconds."""

    def __init__(self, name: str, result=None, error: str | None = None, seconds: float = 0.0):
        self.name, self.result, self.error, self.seconds = name, result, error, seconds

    @property
    def ok(self) -> bool:
        return self.error is None


def _timed(function: Callable, *args, **kwargs):
    """(result, error, seconds): a case's own failure comes back as one line, not as a failed Dask task
    (whose traceback every worker would log)."""
    import time

    started = time.perf_counter()
    try:
        return function(*args, **kwargs), None, time.perf_counter() - started
    except Exception as error:  # one bad case never stops the batch
        return None, one_line(error), time.perf_counter() - started


def one_line(error: BaseException) -> str:
    """``Type: message`` on one line (a child's log tail or a multi-line message joined by " | ")."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {' | '.join(lines)}" if lines else type(error).__name__


def run_batch_on_dask(
    tasks: list[tuple[str, Callable, tuple]],
    scheduler: str | None = None,
    workers: int = 2,
    progress: ProgressCallback | None = None,
) -> list[BatchOutcome]:
    """Run ``function(*args)`` for every ``(name, function, args)`` on Dask distributed: an existing cluster
    at ``scheduler``, or a LocalCluster of ``workers`` single-threaded worker processes. A failing case is
    recorded with its error and never stops the others. Outcomes come back in the order of ``tasks``."""
    from dask.distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler:
        client = Client(scheduler, timeout="20s")
    else:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
    outcomes: dict[str, BatchOutcome] = {}
    try:
        futures = {
            client.submit(_timed, function, *args, key=f"medannot-{name}", pure=False): name
            for name, function, args in tasks
        }
        for done, future in enumerate(as_completed(futures), start=1):
            name = futures[future]
            try:
                result, error, seconds = future.result()
                outcomes[name] = BatchOutcome(name, result, error, seconds)
            except Exception as error:  # a worker that died, or a result that could not travel back
                outcomes[name] = BatchOutcome(name, None, one_line(error))
            if progress is not None:
                progress(done / len(futures), f"{name}: {'ok' if outcomes[name].ok else 'failed'}")
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return [outcomes[name] for name, _, _ in tasks]
