"""Consensus as a background job, against the real server: the last reader's submit does not wait for it, the
case shows its state, a failure is retried and then shown with its reason, a killed worker's job is taken by
another, several `medannot worker` processes share the jobs, a Dask cluster can compute it, and the report
shows the case image."""

from __future__ import annotations

import base64
import io
import os
import re
import signal
import subprocess
import time

import numpy as np
import pytest

from .conftest import BACKENDS
from .harness import MEDANNOT, Api, ServerProcess, tiny_segmentation, unique, wait_for_consensus

DELAY = "MEDANNOT_TEST_JOB_DELAY_S"


def _case(admin: Api, image, readers: int = 2, review: bool = True, cases: int = 1):
    project = admin.new_project(unique("jobs"), readers=readers, review=review)
    users = []
    for _ in range(readers):
        user = admin.new_user(unique("reader"))
        admin.set_roles(project, user.name, "annotator")
        users.append(user)
    made = [admin.upload_case(project, image, unique("case")) for _ in range(cases)]
    return project, made, users


def _submit(project: int, user: Api, folder, seed: int):
    task = user.claim(project)
    assert task is not None
    path = tiny_segmentation(folder / f"{user.name}-{task['id']}.seg.nrrd", seed, ("liver", "spleen"), tag=user.name)
    response = user.submit(project, task, path)
    assert response.status_code == 201, response.text
    return response


def _job(admin: Api, project: int, case_id: int) -> dict | None:
    return admin.ok(admin.get(f"/api/v1/projects/{project}/cases/{case_id}"))["consensus"]


def _poll(what, timeout: float = 120.0, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if value:
            return value
        assert time.monotonic() < deadline, f"not reached within {timeout} s"
        time.sleep(every)


def _consensus_events(admin: Api, project: int) -> list[str]:
    events = admin.ok(admin.get(f"/api/v1/projects/{project}/audit", params={"limit": 1000}))
    return [event["entity_id"] for event in events if event["action"] == "consensus.create"]


def _worker(queue, *extra: str, env: dict | None = None) -> subprocess.Popen:
    command = [MEDANNOT, "worker", "--data-dir", str(queue.data_dir), "--log-level", "info", *extra]
    command += ["--database-url", queue.database_url] if queue.database_url else []
    log = open(queue.root / f"worker-{time.monotonic_ns()}.log", "w")  # noqa: SIM115 (the child writes it)
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=os.environ | (env or {}))


@pytest.mark.parametrize("backend", BACKENDS)
def test_last_submit_returns_before_the_consensus_job_runs(
    backend, start_queue, tiny_image_file, tmp_path, monkeypatch
):
    monkeypatch.setenv(DELAY, "4")  # every job waits 4 s before its compute
    queue = start_queue(backend)
    admin = queue.admin
    project, (case,), users = _case(admin, tiny_image_file)
    _submit(project, users[0], tmp_path, 0)
    started = time.perf_counter()
    last = _submit(project, users[1], tmp_path, 1)
    elapsed = time.perf_counter() - started
    assert last.json()["case_complete"] is True
    # answered while the job is still queued or running: the case waits, its review is not open yet
    view = admin.ok(admin.get(f"/api/v1/projects/{project}/cases/{case['id']}"))
    assert view["state"] == "annotating" and view["consensus"]["state"] in ("queued", "running"), view
    assert [t["kind"] for t in view["tasks"]] == ["annotate", "annotate"]
    # the reader is blind to it
    assert users[1].ok(users[1].get(f"/api/v1/projects/{project}/cases/{case['id']}"))["consensus"] is None
    reviewed = wait_for_consensus(admin, project, case["id"])
    assert reviewed["state"] == "review" and [t["kind"] for t in reviewed["tasks"]][-1] == "review"
    job = reviewed["consensus"]
    assert job["state"] == "done" and job["attempts"] == 1 and job["round"] == 1 and job["error"] is None
    assert job["seconds"] >= 4 > elapsed
    assert _consensus_events(admin, project) == [str(case["id"])]


def _grey_fractions(html: str) -> list[float]:
    """Per embedded picture, the fraction of its pixels that are mid grey: a CT drawn under it, or not."""
    from PIL import Image

    fractions = []
    for data in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html):
        pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")).astype(int)
        grey = (pixels.max(axis=-1) - pixels.min(axis=-1) <= 2) & (pixels[..., 0] > 20) & (pixels[..., 0] < 235)
        fractions.append(float(grey.mean()))
    return fractions


def test_the_servers_report_shows_the_case_image(start_queue, tiny_image_file, tmp_path):
    queue = start_queue("sqlite")
    admin = queue.admin
    project, (case,), users = _case(admin, tiny_image_file)
    for seed, user in enumerate(users):
        _submit(project, user, tmp_path, seed)
    wait_for_consensus(admin, project, case["id"])
    report = admin.get(f"/api/v1/projects/{project}/cases/{case['id']}/consensus/report")
    assert report.status_code == 200
    fractions = _grey_fractions(report.text)
    # the overview and one picture per structure; without the image each is < 2 % grey (text only)
    assert len(fractions) >= 3 and min(fractions) > 0.15, fractions


def test_a_failing_job_is_retried_then_shown_failed_and_can_be_queued_again(
    start_queue, tiny_image_file, tmp_path, monkeypatch
):
    monkeypatch.setenv("MEDANNOT_JOB_RETRY_SECONDS", "0.2")
    monkeypatch.setenv("MEDANNOT_JOB_MAX_ATTEMPTS", "2")
    queue = start_queue("sqlite")
    admin = queue.admin
    project, (case,), users = _case(admin, tiny_image_file)
    base = f"/api/v1/projects/{project}"
    first = _submit(project, users[0], tmp_path, 0).json()
    # the stored file of the first submission is damaged on disk
    blob = queue.data_dir / "blobs" / first["sha256"][:2] / f"{first['sha256']}.seg.nrrd"
    original = blob.read_bytes()
    blob.chmod(0o600)
    blob.write_bytes(original[: len(original) // 3])
    # an admin's queue request while a reader is still out changes nothing
    early = admin.ok(admin.post(f"{base}/cases/{case['id']}/consensus"))
    assert early["queued"] is False and early["consensus"] is None
    _submit(project, users[1], tmp_path, 1)

    job = _poll(lambda: (j := _job(admin, project, case["id"])) and j["state"] == "failed" and j, timeout=60)
    assert job["attempts"] == 2 and job["finished_at"]
    assert f"submission {first['submission_id']} ({users[0].name})" in job["error"], job["error"]
    assert str(queue.data_dir) not in job["error"] and "blobs/" not in job["error"], job["error"]
    assert [j["id"] for j in admin.ok(admin.get(f"{base}/jobs", params={"state": "failed"}))] == [job["id"]]
    assert admin.ok(admin.get(f"{base}/progress"))["consensus_jobs"] == {"failed": 1}
    assert queue.server.alive() and admin.ok(admin.get("/api/v1/health"))["status"] == "ok"
    assert admin.ok(admin.get(f"{base}/cases/{case['id']}"))["state"] == "annotating"
    forbidden = users[0].post(f"{base}/cases/{case['id']}/consensus")
    assert forbidden.status_code == 403 and forbidden.json()["code"] == "forbidden"
    assert users[0].get(f"{base}/jobs").status_code == 403

    # repaired, the admin queues it again: its attempts start over and it completes
    blob.write_bytes(original)
    again = admin.ok(admin.post(f"{base}/cases/{case['id']}/consensus"))
    assert again["queued"] is True and again["consensus"]["state"] == "queued" and again["consensus"]["attempts"] == 0
    reviewed = wait_for_consensus(admin, project, case["id"], timeout=60)
    assert reviewed["consensus"]["state"] == "done" and reviewed["consensus"]["attempts"] == 1
    actions = [e["action"] for e in admin.ok(admin.get(f"{base}/audit", params={"limit": 1000}))]
    assert actions.count("consensus.queue") == 1 and actions.count("consensus.create") == 1
    assert "attempt 2 failed (failed)" in queue.server.log_text()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_killed_workers_job_is_taken_by_another_and_recorded_once(backend, start_queue, tiny_image_file, tmp_path):
    queue = start_queue(backend, "--job-threads", "0")  # this server runs no jobs: the workers do
    admin = queue.admin
    project, (case,), users = _case(admin, tiny_image_file)
    for seed, user in enumerate(users):
        _submit(project, user, tmp_path, seed)
    assert _job(admin, project, case["id"])["state"] == "queued"
    lease = {"MEDANNOT_JOB_LEASE_SECONDS": "2"}
    doomed = _worker(queue, env=lease | {DELAY: "120"})
    held = _poll(lambda: (j := _job(admin, project, case["id"])) and j["state"] == "running" and j, timeout=60)
    assert held["worker"].split(":")[1] == str(doomed.pid)
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.wait(timeout=30)
    rescuer = _worker(queue, env=lease)
    try:
        reviewed = wait_for_consensus(admin, project, case["id"], timeout=120)
    finally:
        rescuer.send_signal(signal.SIGTERM)
        assert rescuer.wait(timeout=60) == 0
    job = reviewed["consensus"]
    assert job["state"] == "done" and job["attempts"] == 2 and job["worker"].split(":")[1] == str(rescuer.pid)
    assert _consensus_events(admin, project) == [str(case["id"])]
    assert admin.ok(admin.get(f"/api/v1/projects/{project}/cases/{case['id']}/consensus"))["round"] == 1


def test_two_workers_share_a_batch_of_jobs_on_postgresql(start_queue, tiny_image_file, tmp_path):
    queue = start_queue("postgresql", "--job-threads", "0")
    admin = queue.admin
    project, cases, users = _case(admin, tiny_image_file, cases=8)
    for seed, user in enumerate(users):
        for _ in cases:
            _submit(project, user, tmp_path, seed)
    queued = admin.ok(admin.get(f"/api/v1/projects/{project}/jobs"))
    assert len(queued) == 8 and {j["state"] for j in queued} == {"queued"}
    workers = [_worker(queue, "--burst", env={DELAY: "1"}) for _ in range(2)]
    assert [w.wait(timeout=300) for w in workers] == [0, 0]
    done = admin.ok(admin.get(f"/api/v1/projects/{project}/jobs"))
    assert [(j["state"], j["attempts"]) for j in done] == [("done", 1)] * 8  # none taken twice
    assert {j["worker"].split(":")[1] for j in done} == {str(w.pid) for w in workers}  # both took some
    assert sorted(_consensus_events(admin, project)) == sorted(str(c["id"]) for c in cases)
    assert {admin.ok(admin.get(f"/api/v1/projects/{project}/cases/{c['id']}"))["state"] for c in cases} == {"review"}


@pytest.mark.parametrize("backend", BACKENDS)
def test_start_queues_cases_whose_readers_are_all_in(backend, start_queue, tiny_image_file, tmp_path):
    queue = start_queue(backend, "--job-threads", "0")
    admin = queue.admin
    project, (case,), users = _case(admin, tiny_image_file, review=False)
    for seed, user in enumerate(users):
        _submit(project, user, tmp_path, seed)
    # killed between the last submission and queueing its job: the job row is not there
    queue.server.kill()
    _sql(queue, "DELETE FROM jobs")
    restarted = ServerProcess(queue.data_dir, queue.database_url).start()
    try:
        api = Api(restarted.url, queue.admin_token)
        approved = wait_for_consensus(api, project, case["id"])
        assert approved["state"] == "approved" and approved["consensus"]["attempts"] == 1
        assert "queued the consensus of 1 case(s)" in restarted.log_text()
        api.close()
    finally:
        restarted.stop()


def _sql(queue, statement: str) -> None:
    if queue.database_url is None:
        import sqlite3

        with sqlite3.connect(queue.data_dir / "queue.sqlite3") as connection:
            connection.execute(statement)
        return
    import psycopg

    with psycopg.connect(queue.database_url.replace("postgresql+psycopg", "postgresql")) as connection:
        connection.execute(statement)


def test_consensus_computed_on_a_dask_cluster(start_queue, tiny_image_file, tmp_path):
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        queue = start_queue("sqlite", "--dask-scheduler", cluster.scheduler_address)
        try:
            admin = queue.admin
            project, (case,), users = _case(admin, tiny_image_file)
            for seed, user in enumerate(users):
                _submit(project, user, tmp_path, seed)
            reviewed = wait_for_consensus(admin, project, case["id"])
            assert reviewed["consensus"]["state"] == "done"
            assert "medannot-consensus" in cluster.scheduler.task_prefixes
            agreement = admin.ok(admin.get(f"/api/v1/projects/{project}/cases/{case['id']}/consensus"))
            assert agreement["readers"] == [u.name for u in users] and agreement["agreement"]["structures"]
        finally:
            queue.stop()


def test_a_stopping_server_hands_its_job_back(start_queue, tiny_image_file, tmp_path, monkeypatch):
    monkeypatch.setenv(DELAY, "120")
    queue = start_queue("sqlite")
    admin = queue.admin
    project, (case,), users = _case(admin, tiny_image_file)
    for seed, user in enumerate(users):
        _submit(project, user, tmp_path, seed)
    _poll(lambda: _job(admin, project, case["id"])["state"] == "running", timeout=60)
    started = time.monotonic()
    queue.server.stop()  # SIGTERM: the job thread stops waiting and hands the job back
    assert time.monotonic() - started < 15 and "handed back" in queue.server.log_text()
    idle = ServerProcess(queue.data_dir, None, None, "--job-threads", "0").start()
    try:
        api = Api(idle.url, queue.admin_token)
        job = _job(api, project, case["id"])
        assert job["state"] == "queued" and job["attempts"] == 0 and job["retry_at"] is None, job
        api.close()
    finally:
        idle.stop()
