"""64 concurrent claimers over 2,000 tasks: no task is ever held by two leases, each is submitted once.

SQLite: one server, and two server processes on the same file (claims serialized by BEGIN IMMEDIATE).
PostgreSQL: two server replicas sharing the database and the blob directory (FOR UPDATE SKIP LOCKED).
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
from sqlalchemy import create_engine, text

from .harness import Api, tiny_metadata, tiny_segmentation

TASKS = 2000
CLAIMERS = 64


def _database_url(queue) -> str:
    return queue.database_url or f"sqlite:///{queue.data_dir / 'queue.sqlite3'}"


@pytest.mark.slow
@pytest.mark.parametrize("backend,replicas", [("sqlite", 1), ("sqlite", 2), ("postgresql", 2)])
def test_concurrent_claimers_never_share_a_task(backend, replicas, start_queue, tiny_image_file, tmp_path):
    queue = start_queue(backend, "--log-level", "warning", replicas=replicas)
    admin = queue.admin
    project = admin.new_project("load", readers=1, review=False)
    image = admin.upload_image(project, tiny_image_file)
    for start in range(0, TASKS, 1000):
        cases = [{"name": f"case-{i:05d}", "image_sha256": image["sha256"]} for i in range(start, start + 1000)]
        admin.ok(admin.post(f"/api/v1/projects/{project}/cases/bulk", json={"cases": cases}), 201)
    readers = []
    for index in range(CLAIMERS):
        user = admin.new_user(f"reader{index:02d}")
        admin.set_roles(project, user.name, "annotator")
        readers.append(Api(queue.servers[index % replicas].url, user.token, user.name))
    segmentation = tiny_segmentation(tmp_path / "reader.seg.nrrd")

    claims: list[tuple[int, str]] = []
    submitted: list[tuple[int, int]] = []
    failures: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(CLAIMERS)

    def claimer(api: Api) -> None:
        barrier.wait()
        try:
            while True:
                task = api.claim(project)
                if task is None:
                    return
                with lock:
                    claims.append((task["id"], task["lease_id"]))
                response = api.submit(project, task, segmentation, tiny_metadata(1.0), key=f"t{task['id']}")
                if response.status_code != 201:
                    raise AssertionError(f"task {task['id']}: {response.status_code} {response.text}")
                with lock:
                    submitted.append((task["id"], response.json()["submission_id"]))
        except Exception as error:  # reported below; a silent thread would hide a failure
            failures.append(f"{api.name}: {error!r}")

    threads = [threading.Thread(target=claimer, args=(api,)) for api in readers]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    for api in readers:
        api.close()
    assert not failures, failures[:5]

    claimed_tasks = Counter(task_id for task_id, _ in claims)
    assert len(claims) == TASKS and len(claimed_tasks) == TASKS, "a task was handed out twice"
    assert len({lease for _, lease in claims}) == TASKS
    assert len(submitted) == TASKS and len({task_id for task_id, _ in submitted}) == TASKS
    assert len({sid for _, sid in submitted}) == TASKS

    engine = create_engine(_database_url(queue))
    with engine.connect() as connection:
        twice = connection.execute(
            text("SELECT task_id FROM submissions GROUP BY task_id HAVING COUNT(*) > 1")
        ).fetchall()
        claimed_twice = connection.execute(
            text(
                "SELECT entity_id FROM audit_events WHERE action = 'task.claim' GROUP BY entity_id HAVING COUNT(*) > 1"
            )
        ).fetchall()
        states = dict(connection.execute(text("SELECT state, COUNT(*) FROM tasks GROUP BY state")).fetchall())
    engine.dispose()
    assert twice == [] and claimed_twice == []
    assert states == {"submitted": TASKS}
    progress = admin.ok(admin.get(f"/api/v1/projects/{project}/progress"))
    assert progress["cases"] == {"total": TASKS, "approved": TASKS}
    assert admin.ok(admin.get("/api/v1/audit/verify"))["ok"] is True
    print(
        f"\n{backend} x{replicas}: {TASKS} claims + {TASKS} submissions by {CLAIMERS} claimers in {elapsed:.1f} s "
        f"({TASKS / elapsed:.0f} claim+submit pairs/s)"
    )
