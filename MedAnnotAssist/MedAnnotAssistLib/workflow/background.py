"""The models' long work (HTTP, downloads, engine runs, outbox delivery) and the pump that brings its
results back to the caller's thread.

``Background.start(name, work, done=, failed=)`` runs ``work(progress=, cancel=)`` in a ``core.jobs``
worker and returns at once. ``poll()``, called by the front-end's timer (a QTimer in Slicer, trame's
asynchronous loop in the browser, ``wait_until`` in scripts), calls ``done(result)`` or ``failed(error)`` for
each finished job on the caller's thread, where MRML may be touched. So a model never blocks and never
touches the scene from a worker.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from ..core.jobs import CancelledError, Job, JobRunner

log = logging.getLogger("MedAnnotAssist.workflow")


@dataclass
class _Pending:
    job: Job
    done: Callable | None
    failed: Callable | None


class Background:
    """A small pool of workers shared by the panel models of one workstation."""

    def __init__(self, runner: JobRunner | None = None, workers: int = 3):
        self._owned = runner is None
        self.runner = runner or JobRunner(workers, name="medannot-workflow")
        self._pending: list[_Pending] = []
        self.on_error: Callable[[str, BaseException], None] | None = None  # a callback that failed

    def start(self, name: str, work: Callable, done: Callable | None = None, failed: Callable | None = None) -> Job:
        """Run ``work(progress=, cancel=)``; ``done(result)`` or ``failed(error)`` follow in ``poll()``."""
        job = self.runner.submit(name, work)
        self._pending.append(_Pending(job, done, failed))
        return job

    def running(self, name: str | None = None) -> bool:
        return any(name is None or p.job.name == name for p in self._pending)

    def job(self, name: str) -> Job | None:
        return next((p.job for p in self._pending if p.job.name == name), None)

    def cancel(self, name: str) -> bool:
        job = self.job(name)
        if job is not None:
            job.cancel()
        return job is not None

    def poll(self) -> int:
        """Hand the results of finished jobs to their callbacks, here; the number handed."""
        finished = [p for p in self._pending if p.job.done()]
        for item in finished:
            self._pending.remove(item)
            future = item.job.future
            if future.cancelled():
                outcome, ok = CancelledError(f"{item.job.name} was cancelled"), False
            else:
                error = future.exception()
                outcome, ok = (future.result(), True) if error is None else (error, False)
            callback = item.done if ok else item.failed
            if not ok and callback is None:
                log.warning("%s failed: %s", item.job.name, outcome)
                continue
            if callback is None:
                continue
            try:
                callback(outcome)
            except Exception as error:  # a model's own bug: reported, the pump goes on
                log.exception("the result of %s could not be applied", item.job.name)
                if self.on_error is not None:
                    self.on_error(item.job.name, error)
        return len(finished)

    def shutdown(self) -> None:
        for item in self._pending:
            item.job.cancel()
        if self._owned:
            self.runner.shutdown(wait=False)
