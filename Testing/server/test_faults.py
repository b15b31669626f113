"""Faults: the server killed (SIGKILL) again and again under a stream of submissions retried with
Idempotency-Keys, and a client killed while holding leases."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
import uuid

import httpx
import pytest
import SimpleITK as sitk
from sqlalchemy import create_engine, text

from .conftest import BACKENDS
from .harness import Api, tiny_metadata, tiny_segmentation, unique

CASES = 150
PAUSE_S = 0.1  # a reader's work between two submissions: the stream outlasts the restarts
RESTARTS = 6


def _call(action, *, attempts: int = 600):
    """Retry through the server's deaths: connection errors and 5xx mean 'try again'."""
    for _ in range(attempts):
        try:
            response = action()
        except httpx.TransportError:
            time.sleep(0.1)
            continue
        if response.status_code < 500:
            return response
        time.sleep(0.1)
    raise AssertionError("the server did not come back")


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_acknowledged_submissions_survive_sigkill(backend, start_queue, tiny_image_file, tmp_path):
    queue = start_queue(backend, "--log-level", "warning")
    server, admin = queue.server, queue.admin
    project = admin.new_project("faults", readers=1, review=False)
    image = admin.upload_image(project, tiny_image_file)
    cases = [{"name": f"case-{i:03d}", "image_sha256": image["sha256"]} for i in range(CASES)]
    admin.ok(admin.post(f"/api/v1/projects/{project}/cases/bulk", json={"cases": cases}), 201)
    readers = []
    for index in range(3):
        user = admin.new_user(f"reader{index}")
        admin.set_roles(project, user.name, "annotator")
        readers.append(user)
    files = [tiny_segmentation(tmp_path / f"s{i}.seg.nrrd", seed=i, tag=f"file-{i}") for i in range(CASES)]

    acknowledged: dict[int, dict] = {}
    problems: list[str] = []
    lock = threading.Lock()

    def all_submitted() -> bool:
        progress = _call(lambda: admin.get(f"/api/v1/projects/{project}/progress")).json()
        return progress["tasks"].get("annotate", {}).get("submitted", 0) == CASES

    def reader_loop(api: Api, offset: int) -> None:
        count = 0
        while True:
            response = _call(lambda: api.post(f"/api/v1/projects/{project}/tasks/claim", json={"lease_seconds": 3}))
            task = response.json()["task"]
            if task is None:
                if all_submitted():
                    return
                time.sleep(0.3)  # leases of claims whose answer was lost expire, then come back
                continue
            time.sleep(PAUSE_S)
            key = str(uuid.uuid4())
            path = files[(offset + count) % len(files)]
            count += 1
            answer = _call(lambda: api.submit(project, task, path, tiny_metadata(1.0), key=key))  # noqa: B023
            if answer.status_code == 201:
                body = answer.json()
                with lock:
                    earlier = acknowledged.get(task["id"])
                    if earlier is not None and earlier["submission_id"] != body["submission_id"]:
                        problems.append(f"task {task['id']} acknowledged twice: {earlier} and {body}")
                    acknowledged[task["id"]] = body
            elif answer.json()["code"] != "lease_lost":  # another reader re-claimed it after expiry: theirs now
                problems.append(f"task {task['id']}: {answer.status_code} {answer.text}")

    threads = [threading.Thread(target=reader_loop, args=(api, i * CASES // 2)) for i, api in enumerate(readers)]
    for thread in threads:
        thread.start()
    rng = random.Random(20260101)
    restarts = 0
    while restarts < RESTARTS and any(t.is_alive() for t in threads):
        time.sleep(rng.uniform(0.4, 1.2))
        server.kill()
        restarts += 1
        server.start()
    for thread in threads:
        thread.join(timeout=240)
    assert not any(t.is_alive() for t in threads), "readers did not finish"
    assert not problems, problems[:5]
    assert restarts == RESTARTS, f"only {restarts} restarts before the stream ended"
    assert len(acknowledged) == CASES

    # after one more kill and restart, every acknowledged submission is there exactly once, intact
    server.kill()
    server.start()
    engine = create_engine(queue.database_url or f"sqlite:///{queue.data_dir / 'queue.sqlite3'}")
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT id, task_id, sha256, size_bytes FROM submissions")).fetchall()
    engine.dispose()
    assert len(rows) == CASES and len({row.task_id for row in rows}) == CASES
    stored = {row.task_id: row for row in rows}
    for task_id, body in acknowledged.items():
        row = stored[task_id]
        assert (row.id, row.sha256, row.size_bytes) == (body["submission_id"], body["sha256"], body["size_bytes"])
        blob = queue.data_dir / "blobs" / row.sha256[:2] / f"{row.sha256}.seg.nrrd"
        from medannotassist_server.blobs import sha256_of

        assert sha256_of(blob) == row.sha256
        assert sitk.ReadImage(str(blob)).GetSize() == (12, 10, 6)
    assert admin.ok(admin.get("/api/v1/audit/verify"))["ok"] is True
    print(f"\n{backend}: {restarts + 1} SIGKILLs during {CASES} submissions; all {CASES} acknowledged ones intact")


KILLED_CLIENT = """
import json, sys, time, httpx
base, token, project = sys.argv[1:4]
client = httpx.Client(base_url=base, headers={"Authorization": "Bearer " + token})
tasks = [client.post(f"/api/v1/projects/{project}/tasks/claim", json={"lease_seconds": 1}).json()["task"]
         for _ in range(2)]
print(json.dumps(tasks), flush=True)
time.sleep(600)
"""


def test_leases_of_a_killed_client_expire(queue, tiny_image_file, tmp_path):
    admin = queue.admin
    project = admin.new_project(unique("killed-client"), readers=1, review=False)
    image = admin.upload_image(project, tiny_image_file)
    cases = [{"name": f"c{i}", "image_sha256": image["sha256"]} for i in range(2)]
    admin.ok(admin.post(f"/api/v1/projects/{project}/cases/bulk", json={"cases": cases}), 201)
    doomed, survivor = admin.new_user(unique("doomed")), admin.new_user(unique("survivor"))
    admin.set_roles(project, doomed.name, "annotator")
    admin.set_roles(project, survivor.name, "annotator")
    client = subprocess.Popen(
        [sys.executable, "-c", KILLED_CLIENT, queue.url, doomed.token, str(project)], stdout=subprocess.PIPE, text=True
    )
    held = json.loads(client.stdout.readline())
    client.kill()
    client.wait()
    assert all(task is not None for task in held)
    assert survivor.claim(project) is None  # still leased
    time.sleep(1.3)
    again = [survivor.claim(project), survivor.claim(project)]
    assert sorted(t["id"] for t in again) == sorted(t["id"] for t in held)
    # the dead client's leases are fenced off now that the tasks were claimed again
    for task in held:
        beat = doomed.post(
            f"/api/v1/projects/{project}/tasks/{task['id']}/heartbeat", json={"lease_id": task["lease_id"]}
        )
        assert beat.status_code == 409 and beat.json()["code"] == "lease_lost"
        late = doomed.submit(project, task, tiny_segmentation(tmp_path / "late.seg.nrrd"))
        assert late.status_code == 409 and late.json()["code"] == "lease_lost"
    for task in again:
        assert survivor.submit(project, task, tiny_segmentation(tmp_path / "s.seg.nrrd")).status_code == 201
