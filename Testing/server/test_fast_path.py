"""Claims, heartbeats and releases through the group-commit writer of real servers: a revoked token or a
removed role is refused at once by every worker process and replica, and a server killed (SIGKILL) in the
middle of its batches loses no acknowledged write and acknowledged nothing it did not commit, on SQLite
and on PostgreSQL behind two replicas; the audit chain verifies after."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import defaultdict

import httpx
import pytest
from sqlalchemy import create_engine, text

from medannotassist_server.group_commit import TEST_DELAY_ENV

from .harness import Api, tiny_metadata, tiny_segmentation, unique


def _fresh(api: Api) -> Api:
    """A new client (a new connection): with --workers 2 the kernel hands each to either process."""
    return Api(api.base, api.token, api.name)


def _claims(apis: list[Api], project: int, rounds: int) -> list[httpx.Response]:
    answers = []
    for _ in range(rounds):
        for api in apis:
            client = _fresh(api)
            try:
                answer = client.post(f"/api/v1/projects/{project}/tasks/claim", json={})
                answers.append(answer)
                task = answer.json().get("task") if answer.status_code == 200 else None
                if task:
                    body = {"lease_id": task["lease_id"]}
                    answers.append(client.post(f"/api/v1/projects/{project}/tasks/{task['id']}/release", json=body))
            finally:
                client.close()
    return answers


@pytest.mark.parametrize("backend,options,replicas", [("sqlite", ("--workers", "2"), 1), ("postgresql", (), 2)])
def test_a_revoked_token_or_removed_role_is_refused_at_once_everywhere(
    backend, options, replicas, start_queue, tiny_image_file
):
    queue = start_queue(backend, "--log-level", "warning", *options, replicas=replicas)
    admin = queue.admin
    project = admin.new_project(unique("revoke"), readers=1, review=False)
    image = admin.upload_image(project, tiny_image_file)
    cases = [{"name": f"c{i}", "image_sha256": image["sha256"]} for i in range(4)]
    admin.ok(admin.post(f"/api/v1/projects/{project}/cases/bulk", json={"cases": cases}), 201)
    users = [admin.new_user(unique("reader")) for _ in range(2)]
    for user in users:
        admin.set_roles(project, user.name, "annotator")
    # every process serves (and caches) both tokens, many times
    per_server = [[Api(server.url, user.token, user.name) for server in queue.servers] for user in users]
    warm = _claims([api for apis in per_server for api in apis], project, 10)
    assert {answer.status_code for answer in warm} == {200}

    token_id = next(t["id"] for t in users[0].ok(users[0].get("/api/v1/me/tokens")) if t["current"])
    users[0].ok(users[0].delete(f"/api/v1/me/tokens/{token_id}"))
    revoked_at = time.monotonic()
    admin.set_roles(project, users[1].name, "reviewer")  # no longer an annotator: claims give no task
    answers = _claims(per_server[0], project, 10)
    assert time.monotonic() - revoked_at < 10
    assert {(a.status_code, a.json().get("code")) for a in answers} == {(401, "token_revoked")}, [
        a.text for a in answers
    ]
    admin.set_roles(project, users[1].name)  # removed from the project
    answers = _claims(per_server[1], project, 10)
    assert {(a.status_code, a.json().get("code")) for a in answers} == {(404, "project_not_found")}
    for apis in per_server:
        for api in apis:
            api.close()


@pytest.mark.parametrize("backend,options,replicas", [("sqlite", ("--workers", "2"), 1), ("postgresql", (), 2)])
def test_an_expired_lease_is_claimed_again_and_fenced_off_everywhere(
    backend, options, replicas, start_queue, tiny_image_file, tmp_path
):
    queue = start_queue(backend, "--log-level", "warning", *options, replicas=replicas)
    admin = queue.admin
    project = admin.new_project(unique("expiry"), readers=1, review=False)
    image = admin.upload_image(project, tiny_image_file)
    admin.ok(admin.post(f"/api/v1/projects/{project}/cases/bulk", json={"cases": [
        {"name": "only", "image_sha256": image["sha256"]}]}), 201)  # fmt: skip
    late, early = admin.new_user(unique("late")), admin.new_user(unique("early"))
    for user in (late, early):
        admin.set_roles(project, user.name, "annotator")
    first, second = (Api(server.url, user.token, user.name) for server, user in zip(
        queue.servers * 2, (late, early), strict=False))  # fmt: skip
    task = first.claim(project, lease_seconds=1)
    base = f"/api/v1/projects/{project}/tasks/{task['id']}"
    beat = first.ok(first.post(f"{base}/heartbeat", json={"lease_id": task["lease_id"], "lease_seconds": 1}))
    assert beat["state"] == "leased" and second.claim(project) is None  # still leased
    time.sleep(1.5)
    # expired but not claimed again: the lease still works (a heartbeat revives it), then expires again
    first.ok(first.post(f"{base}/heartbeat", json={"lease_id": task["lease_id"], "lease_seconds": 1}))
    time.sleep(1.5)
    again = second.claim(project)
    assert again["id"] == task["id"] and again["lease_id"] != task["lease_id"]
    for answer in (
        _fresh(first).post(f"{base}/heartbeat", json={"lease_id": task["lease_id"]}),
        _fresh(first).post(f"{base}/release", json={"lease_id": task["lease_id"]}),
        first.submit(project, task, tiny_segmentation(tmp_path / "late.seg.nrrd")),
    ):
        assert answer.status_code == 409 and answer.json()["code"] == "lease_lost", answer.text
    assert second.submit(project, again, tiny_segmentation(tmp_path / "in-time.seg.nrrd")).status_code == 201
    assert admin.ok(admin.get("/api/v1/audit/verify"))["ok"] is True
    first.close()
    second.close()


CASES = 300
CLIENTS = 16
KILLS = 4
LEASE_S = 900  # no lease expires during the test: a task claimed twice without a release between is a double lease


@pytest.mark.slow
@pytest.mark.parametrize("backend,replicas", [("sqlite", 1), ("postgresql", 2)])
def test_sigkill_in_the_middle_of_batches_loses_nothing_acknowledged(
    backend, replicas, start_queue, tiny_image_file, tmp_path, monkeypatch
):
    monkeypatch.setenv(TEST_DELAY_ENV, "0.02")  # each batch waits 20 ms before its commit: kills land inside
    queue = start_queue(backend, "--log-level", "warning", replicas=replicas)
    admin, victim = queue.admin, queue.servers[0]
    project = admin.new_project(unique("sigkill"), readers=1, review=False)
    image = admin.upload_image(project, tiny_image_file)
    cases = [{"name": f"c{i:03d}", "image_sha256": image["sha256"]} for i in range(CASES)]
    admin.ok(admin.post(f"/api/v1/projects/{project}/cases/bulk", json={"cases": cases}), 201)
    users = []
    for index in range(CLIENTS):
        user = admin.new_user(f"{unique('reader')}-{index}")
        admin.set_roles(project, user.name, "annotator")
        users.append(user)
    segmentation = tiny_segmentation(tmp_path / "reader.seg.nrrd")
    acked: dict[str, list[tuple]] = defaultdict(list)  # per user: what the server acknowledged, in order
    tried: dict[str, list[tuple]] = defaultdict(list)  # per user: what was sent and got no answer
    problems: list[str] = []
    stop = threading.Event()
    base = f"/api/v1/projects/{project}/tasks"

    def send(api: Api, what: tuple, call):
        try:
            answer = call()
        except httpx.TransportError:
            tried[api.name].append(what)
            time.sleep(0.05)  # the server is down: it comes back within a second or two
            return None
        if answer.status_code >= 500:
            tried[api.name].append(what)
            return None
        if answer.status_code >= 400:
            problems.append(f"{api.name} {what}: {answer.status_code} {answer.text}")
            return None
        return answer.json()

    def release(api: Api, task_id: int, lease: str) -> httpx.Response:
        return api.post(f"{base}/{task_id}/release", json={"lease_id": lease})

    def submit(api: Api, task: dict, key: str) -> httpx.Response:
        return api.submit(project, task, segmentation, tiny_metadata(1.0), key=key)

    def client(user: Api, index: int) -> None:
        api = Api(queue.servers[index % replicas].url, user.token, user.name)
        rng = random.Random(index)
        while not stop.is_set():
            task = send(api, ("claim",), lambda: api.post(f"{base}/claim", json={"lease_seconds": LEASE_S}))
            task = task and task["task"]
            if task is None:
                time.sleep(0.05)
                continue
            tid, lease = task["id"], task["lease_id"]
            acked[api.name].append(("claim", tid, lease, task["lease_expires_at"]))
            beat = send(
                api, ("heartbeat", tid, lease),
                lambda: api.post(f"{base}/{tid}/heartbeat", json={"lease_id": lease, "lease_seconds": LEASE_S}),  # noqa: B023
            )  # fmt: skip
            if beat is None:
                continue  # no answer: this task is left as it is (leased, or not)
            acked[api.name].append(("heartbeat", tid, lease, beat["lease_expires_at"]))
            choice = rng.random()
            if choice < 0.2:
                continue  # a reader who walks away: the task stays leased
            if choice < 0.6:
                if send(api, ("release", tid, lease), lambda: release(api, tid, lease)):  # noqa: B023
                    acked[api.name].append(("release", tid, lease))
                continue
            key = str(uuid.uuid4())
            done = send(api, ("submit", tid), lambda: submit(api, task, key))  # noqa: B023
            if done is not None:
                acked[api.name].append(("submit", tid, done["submission_id"]))
        api.close()

    threads = [threading.Thread(target=client, args=(user, i)) for i, user in enumerate(users)]
    for thread in threads:
        thread.start()
    rng = random.Random(20261204)
    for _ in range(KILLS):
        time.sleep(rng.uniform(1.0, 2.5))
        victim.kill()
        victim.start()
    time.sleep(1.0)
    stop.set()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert not problems, problems[:5]
    assert sum(len(ops) for ops in acked.values()) > 200 and sum(len(ops) for ops in tried.values()) > 0

    engine = create_engine(queue.database_url or f"sqlite:///{queue.data_dir / 'queue.sqlite3'}")
    with engine.connect() as connection:
        tasks = {row.id: row for row in connection.execute(
            text("SELECT id, state, holder_id, lease_id, lease_expires_at FROM tasks WHERE project_id = :p"),
            {"p": project},
        )}  # fmt: skip
        events = connection.execute(
            text("SELECT entity_id, action, actor FROM audit_events WHERE chain = :p AND entity = 'task' ORDER BY seq"),
            {"p": project},
        ).all()
        submissions = {row.id: row.task_id for row in connection.execute(text("SELECT id, task_id FROM submissions"))}
        user_ids = dict(connection.execute(text("SELECT name, id FROM users")).all())
    engine.dispose()

    # no double lease: per task, a claim only after the previous lease was released or submitted
    last: dict[int, str] = {}
    counts: dict[tuple, int] = defaultdict(int)
    for entity_id, action, actor in events:
        task_id = int(entity_id)
        if action == "task.claim":
            assert last.get(task_id) in (None, "task.release", "submission.create"), f"task {task_id} claimed twice"
        last[task_id] = action
        counts[(actor, action, task_id)] += 1
    # every acknowledged operation is committed; what a reader left holding is still theirs, as last extended
    for name, ops in acked.items():
        mine: dict[tuple, int] = defaultdict(int)
        for op in ops:
            action = {"claim": "task.claim", "release": "task.release", "submit": "submission.create"}.get(op[0])
            if action:
                mine[(name, action, op[1])] += 1
            if op[0] == "submit":
                assert submissions.get(op[2]) == op[1], f"acknowledged submission {op[2]} is missing"
            if op[0] == "release":
                assert tasks[op[1]].lease_id != op[2], f"acknowledged release of task {op[1]} is not there"
        for key, count in mine.items():
            assert counts[key] >= count, f"{key}: {count} acknowledged, {counts[key]} committed"
        held = {}
        for op in ops:
            if op[0] in ("claim", "heartbeat"):
                held[op[1]] = op
            else:
                held.pop(op[1], None)
        unanswered = {op[1] for op in tried[name] if len(op) > 1}
        for task_id, (_, _, lease, expires) in held.items():
            if task_id in unanswered:
                continue  # a heartbeat, release or submission of it may or may not have committed
            row = tasks[task_id]
            assert (row.state, row.holder_id, row.lease_id) == ("leased", user_ids[name], lease), (name, task_id)
            stored = row.lease_expires_at if not isinstance(row.lease_expires_at, str) else row.lease_expires_at
            assert str(stored).replace(" ", "T")[:23] >= expires[:23], (task_id, stored, expires)
    assert admin.ok(admin.get("/api/v1/audit/verify"))["ok"] is True
    print(
        f"\n{backend} x{replicas}: {KILLS} SIGKILLs; {sum(len(o) for o in acked.values())} acknowledged operations, "
        f"{sum(len(o) for o in tried.values())} unanswered, {len(events)} audit rows"
    )
