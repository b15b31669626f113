"""Separation of duties and blinding per case, lease ids and ``lease_mismatch``, and images reachable only
through the caller's project: on the real server, SQLite and PostgreSQL."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from medannotassist_server.schemas import MAX_ID

from .harness import tiny_geometry, tiny_segmentation, unique, wait_for_consensus


def _error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code and body["message"], body
    return body


def _sql(queue, statement: str, params: dict) -> None:
    """Write to the database directly, as an older server version (or someone with SQL access) would."""
    if queue.database_url is None:
        import sqlite3

        with sqlite3.connect(queue.data_dir / "queue.sqlite3") as connection:
            connection.execute(statement.replace("%s", "?"), tuple(params.values()))
    else:
        import psycopg

        with psycopg.connect(queue.database_url.replace("postgresql+psycopg", "postgresql")) as connection:
            connection.execute(statement, tuple(params.values()))


@pytest.fixture
def seg(tmp_path):
    return tiny_segmentation(tmp_path / "reader.seg.nrrd")


def _members(queue, project: int, roles: dict[str, tuple[str, ...]], site_admins=()) -> tuple[dict, dict]:
    names = {key: unique(key) for key in roles}
    users = {key: queue.admin.new_user(name, site_admin=key in site_admins) for key, name in names.items()}
    for key, granted in roles.items():
        queue.admin.set_roles(project, names[key], *granted)
    return users, names


def test_a_case_reader_sees_only_their_own_work_whatever_their_roles(queue, tiny_image_file, seg):
    """Annotator + reviewer, annotator + project admin, annotator + site admin: once they hold (or held) an
    annotate task of a case, they are blind to its other readers like any annotator."""
    project = queue.admin.new_project(unique("duties"), readers=4)
    roles = {"ann1": ("annotator",), "dual": ("annotator", "reviewer"), "padmin": ("annotator", "admin"),
             "site": ("annotator",), "rev": ("reviewer",)}  # fmt: skip
    users, names = _members(queue, project, roles, site_admins=("site",))
    case = queue.admin.upload_case(project, tiny_image_file, "case-1")["id"]
    base = f"/api/v1/projects/{project}"
    first = users["ann1"].claim(project)
    submitted = users["ann1"].ok(users["ann1"].submit(project, first, seg), 201)
    held = {key: users[key].claim(project) for key in ("dual", "padmin", "site")}
    assert {task["case_id"] for task in held.values()} == {case}
    # having held the task is enough: the rule survives a release
    users["dual"].ok(
        users["dual"].post(f"{base}/tasks/{held['dual']['id']}/release", json={"lease_id": held["dual"]["lease_id"]})
    )

    sid = submitted["submission_id"]
    for key in ("dual", "padmin", "site"):
        api = users[key]
        hidden, missing = api.get(f"{base}/submissions/{sid}/file"), api.get(f"{base}/submissions/{MAX_ID}/file")
        # a blinded answer is the answer for a missing id: the count of submissions does not show
        assert hidden.status_code == missing.status_code == 404, (key, hidden.text)
        assert hidden.json()["code"] == missing.json()["code"] == "submission_not_found"
        assert hidden.json()["message"].replace(str(sid), "N") == missing.json()["message"].replace(str(MAX_ID), "N")
        assert api.ok(api.get(f"{base}/cases/{case}/submissions")) == [], key
        view = api.ok(api.get(f"{base}/cases/{case}"))
        assert {t["reader"] for t in view["tasks"]} <= {names[key]} and len(view["tasks"]) <= 1, (key, view)
        listed = [c for c in api.ok(api.get(f"{base}/cases")) if c["id"] == case]
        assert all(len(c["tasks"]) <= 1 for c in listed), (key, listed)
        _error(api.get(f"{base}/tasks/{first['id']}"), 404, "task_not_found")
        _error(api.get(f"{base}/cases/{case}/consensus"), 403, "blinded")
        _error(api.get(f"{base}/cases/{case}/consensus/report"), 403, "blinded")
        _error(api.get(f"{base}/cases/{case}/final"), 403, "blinded")
    # the dashboard leaves out the cases the caller reads (else a one-case project shows its submissions)
    progress = users["dual"].ok(users["dual"].get(f"{base}/progress"))
    assert progress["blinded_cases"] == 1 and progress["cases"]["total"] == 0, progress
    assert progress["readers"] == [] and progress["tasks"] == {}, progress
    # the audit trail of an admin who reads the case: their own events only, for that case
    events = users["padmin"].ok(users["padmin"].get(f"{base}/audit", params={"limit": 1000}))
    actors = {event["actor"] for event in events if event["action"].startswith(("task.", "submission."))}
    assert actors == {names["padmin"]}, actors
    # someone who never read the case still sees everything
    rev = users["rev"]
    assert rev.get(f"{base}/submissions/{sid}/file").status_code == 200
    assert [s["id"] for s in rev.ok(rev.get(f"{base}/cases/{case}/submissions"))] == [sid]
    assert len(rev.ok(rev.get(f"{base}/cases/{case}"))["tasks"]) == 4
    assert rev.ok(rev.get(f"{base}/progress"))["blinded_cases"] == 0


def test_a_reader_never_claims_or_decides_the_review_of_their_case(queue, tiny_image_file, seg):
    project = queue.admin.new_project(unique("own-review"), readers=2)
    users, names = _members(queue, project, {"ann1": ("annotator",), "dual": ("annotator", "reviewer"),
                                              "rev": ("reviewer",)})  # fmt: skip
    case = queue.admin.upload_case(project, tiny_image_file, "case-1")["id"]
    base = f"/api/v1/projects/{project}"
    ann1, dual, rev = users["ann1"], users["dual"], users["rev"]
    assert ann1.submit(project, ann1.claim(project), seg).status_code == 201
    assert dual.submit(project, dual.claim(project, kind="annotate"), seg).status_code == 201
    assert wait_for_consensus(rev, project, case)["state"] == "review"

    assert dual.claim(project) is None  # the review task of the case dual read goes to someone else
    review = rev.claim(project)
    assert review["kind"] == "review" and review["case_id"] == case
    # a reader holding the review lease (a database from before this rule): decide and edited refuse it
    rev_id = rev.ok(rev.get("/api/v1/me"))["id"]
    _sql(queue, "INSERT INTO case_readers (user_id, case_id) VALUES (%s, %s)", {"user": rev_id, "case": case})
    approve = {"lease_id": review["lease_id"], "decision": "approve",
               "structures": {"liver": {"action": "take_reader", "reader": names["ann1"]}}}  # fmt: skip
    _error(rev.post(f"{base}/tasks/{review['id']}/review", json=approve), 403, "reader_cannot_review")
    with open(seg, "rb") as handle:
        files = {"segmentation": ("edited.seg.nrrd", handle.read())}
    edited = rev.post(f"{base}/tasks/{review['id']}/review/edited", files=files, data={"lease_id": review["lease_id"]})
    _error(edited, 403, "reader_cannot_review")
    case_now = queue.admin.ok(queue.admin.get(f"{base}/cases/{case}"))
    assert case_now["state"] == "review" and case_now["final_sha256"] is None


def test_my_tasks_show_lease_ids_and_a_wrong_one_is_a_mismatch(queue, tiny_image_file, seg):
    project = queue.admin.new_project(unique("leases"), readers=1)
    users, _names = _members(queue, project, {"ann": ("annotator",), "other": ("annotator",), "rev": ("reviewer",)})
    queue.admin.upload_case(project, tiny_image_file, "case-1")
    base = f"/api/v1/projects/{project}/tasks"
    ann, other, rev = users["ann"], users["other"], users["rev"]
    task = ann.claim(project)
    mine = ann.ok(ann.get(base))
    assert [(t["id"], t["lease_id"]) for t in mine] == [(task["id"], task["lease_id"])]
    wrong = {"lease_id": "0" * 32}
    body = _error(ann.post(f"{base}/{task['id']}/heartbeat", json=wrong), 409, "lease_mismatch")
    assert "GET" in body["message"] and "expired" not in body["message"]
    _error(ann.post(f"{base}/{task['id']}/release", json=wrong), 409, "lease_mismatch")
    _error(ann.submit(project, {"id": task["id"], **wrong}, seg), 409, "lease_mismatch")
    # someone else's lease is still lost to them, even with the right id
    _error(other.post(f"{base}/{task['id']}/heartbeat", json={"lease_id": task["lease_id"]}), 409, "lease_lost")
    assert ann.submit(project, task, seg).status_code == 201
    assert ann.ok(ann.get(base)) == []
    review = rev.claim(project)
    decision = {"lease_id": "0" * 32, "decision": "approve"}
    _error(rev.post(f"{base}/{review['id']}/review", json=decision), 409, "lease_mismatch")
    assert [t["lease_id"] for t in rev.ok(rev.get(base))] == [review["lease_id"]]


def _unique_image(path):
    from MedAnnotAssistLib.core.labelio import write_volume

    array = np.random.default_rng().integers(-100, 200, size=(6, 10, 12)).astype(np.int16)
    return write_volume(path, array, tiny_geometry())


def test_an_image_is_reachable_only_through_its_project(queue, tmp_path):
    p1, p2 = queue.admin.new_project(unique("p1")), queue.admin.new_project(unique("p2"))
    users, _names = _members(queue, p1, {"a1": ("admin",)})
    users |= _members(queue, p2, {"a2": ("admin",)})[0]
    a1, a2 = users["a1"], users["a2"]
    image = _unique_image(tmp_path / "scan.nrrd")
    sha = a2.upload_image(p2, image)["sha256"]

    def bulk(sha256: str, name: str) -> httpx.Response:
        return a1.post(f"/api/v1/projects/{p1}/cases/bulk", json={"cases": [{"name": name, "image_sha256": sha256}]})

    # another project's image is answered exactly as one that was never uploaded
    never = "f" * 64
    theirs, missing = (
        _error(bulk(sha, "stolen"), 422, "unknown_image"),
        _error(bulk(never, "stolen"), 422, "unknown_image"),
    )
    assert theirs["message"].replace(sha, "H") == missing["message"].replace(never, "H")
    assert a1.ok(a1.get(f"/api/v1/projects/{p1}/cases")) == []
    # the same bytes uploaded into P1 are P1's too (stored once)
    assert a1.upload_image(p1, image)["sha256"] == sha
    case = a1.ok(bulk(sha, "mine"), 201)["case_ids"][0]
    assert a1.get(f"/api/v1/projects/{p1}/cases/{case}/image").content == image.read_bytes()
    assert a2.ok(a2.get(f"/api/v1/projects/{p2}/cases")) == []
    _error(a2.get(f"/api/v1/projects/{p1}/cases/{case}/image"), 404, "project_not_found")


def test_the_site_admin_is_bound_by_the_project_too(queue, tmp_path):
    p1, p2 = queue.admin.new_project(unique("s1")), queue.admin.new_project(unique("s2"))
    sha = queue.admin.upload_image(p2, _unique_image(tmp_path / "scan.nrrd"))["sha256"]
    cases = {"cases": [{"name": "c", "image_sha256": sha}]}
    _error(queue.admin.post(f"/api/v1/projects/{p1}/cases/bulk", json=cases), 422, "unknown_image")
