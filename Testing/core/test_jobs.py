"""Background jobs: progress and cancel from another thread, child processes, and batches on Dask."""

from __future__ import annotations

import os
import threading

import pytest

from MedAnnotAssistLib.core.jobs import CancelledError, JobRunner, check_cancel, run_batch_on_dask, run_in_child_process


def _count(limit, progress, cancel, release: threading.Event | None = None):
    for i in range(limit):
        if release is not None and i == 1:
            release.wait(5)
        check_cancel(cancel, "counting")
        progress((i + 1) / limit, f"step {i + 1}")
    return limit


def test_job_reports_progress_and_result():
    runner = JobRunner()
    job = runner.submit("count", _count, 4)
    assert job.result(10) == 4 and job.done()
    assert job.progress == (1.0, "step 4")
    runner.shutdown()


def test_cancel_stops_a_running_job_with_cancelled_error():
    runner = JobRunner()
    release = threading.Event()
    job = runner.submit("count", _count, 100, release=release)
    job.cancel()
    release.set()
    with pytest.raises(CancelledError, match="counting was cancelled"):
        job.result(10)
    assert job.cancelled()
    runner.shutdown()


def _pid(_):
    return os.getpid()


def test_child_process_runs_elsewhere():
    assert run_in_child_process(_pid, None) != os.getpid()


def _square_or_fail(value):
    if value == 3:
        raise ValueError("bad scan 3")
    return value * value


def test_batch_on_a_local_dask_cluster_collects_errors_and_keeps_order():
    seen = []
    outcomes = run_batch_on_dask(
        [(f"case{i}", _square_or_fail, (i,)) for i in range(5)], workers=2, progress=lambda f, m: seen.append(f)
    )
    assert [o.name for o in outcomes] == [f"case{i}" for i in range(5)]
    assert [o.result for o in outcomes if o.ok] == [0, 1, 4, 16]
    assert outcomes[3].error == "ValueError: bad scan 3" and not outcomes[3].ok
    assert seen[-1] == 1.0 and len(seen) == 5
