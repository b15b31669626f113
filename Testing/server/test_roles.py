"""Authentication, the role matrix and blinding, against the real server on SQLite and PostgreSQL."""

from __future__ import annotations

import httpx
import pytest

from .harness import Api, tiny_segmentation, unique


@pytest.fixture(scope="module")
def team(queue, tiny_image_file, tmp_path_factory):
    """A two-reader project with one case, its first reader's submission in; and a second project."""
    admin = queue.admin
    names = {role: unique(role) for role in ("ann1", "ann2", "rev", "padmin", "outsider")}
    users = {role: admin.new_user(name) for role, name in names.items()}
    project = admin.new_project(unique("blind"), readers=2)
    other = admin.new_project(unique("other"), readers=1)
    admin.set_roles(project, names["ann1"], "annotator")
    admin.set_roles(project, names["ann2"], "annotator")
    admin.set_roles(project, names["rev"], "reviewer")
    admin.set_roles(project, names["padmin"], "admin")
    admin.set_roles(other, names["outsider"], "annotator")
    case = admin.upload_case(project, tiny_image_file, "case-1")
    task1 = users["ann1"].claim(project)
    seg = tiny_segmentation(tmp_path_factory.mktemp("seg") / "r1.seg.nrrd")
    submitted = users["ann1"].submit(project, task1, seg)
    assert submitted.status_code == 201, submitted.text
    task2 = users["ann2"].claim(project)
    return {"users": users, "names": names, "project": project, "other": other, "case": case, "task2": task2,
            "submission": submitted.json()["submission_id"], "seg": seg}  # fmt: skip


def _error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code and body["message"], body


def test_every_endpoint_but_health_needs_a_token(queue, team):
    anonymous = Api(queue.url, None)
    assert anonymous.ok(anonymous.get("/api/v1/health"))["status"] == "ok"
    project, case = team["project"], team["case"]["id"]
    for method, path in [
        ("GET", "/api/v1/me"),
        ("GET", "/api/v1/projects"),
        ("POST", "/api/v1/projects"),
        ("GET", f"/api/v1/projects/{project}"),
        ("POST", f"/api/v1/projects/{project}/tasks/claim"),
        ("GET", f"/api/v1/projects/{project}/cases/{case}/consensus"),
        ("GET", f"/api/v1/projects/{project}/submissions/{team['submission']}/file"),
        ("GET", "/api/v1/audit/verify"),
    ]:
        _error(anonymous.client.request(method, path), 401, "unauthorized")
    forged = Api(queue.url, "mat_" + "x" * 43)
    _error(forged.get("/api/v1/me"), 401, "invalid_token")
    _error(anonymous.get("/api/v1/me", headers={"Authorization": "Basic abc"}), 401, "unauthorized")


def test_blinding_before_review(team):
    users, project, case = team["users"], team["project"], team["case"]["id"]
    ann2 = users["ann2"]
    base = f"/api/v1/projects/{project}"
    # another reader's submission is answered as a missing one: its existence does not show
    _error(ann2.get(f"{base}/submissions/{team['submission']}/file"), 404, "submission_not_found")
    assert ann2.ok(ann2.get(f"{base}/cases/{case}/submissions")) == []
    _error(ann2.get(f"{base}/cases/{case}/consensus"), 403, "blinded")
    _error(ann2.get(f"{base}/cases/{case}/final"), 403, "blinded")
    case_view = ann2.ok(ann2.get(f"{base}/cases/{case}"))
    assert [t["reader"] for t in case_view["tasks"]] == [team["names"]["ann2"]]  # not who else reads it
    # the reader themself, the reviewer and the project admin see it
    for role in ("ann1", "rev", "padmin"):
        assert users[role].get(f"{base}/submissions/{team['submission']}/file").status_code == 200, role


def test_role_matrix(team, tiny_image_file):
    users, project = team["users"], team["project"]
    base = f"/api/v1/projects/{project}"
    ann1, rev, padmin = users["ann1"], users["rev"], users["padmin"]
    with open(tiny_image_file, "rb") as handle:
        files = {"image": ("x.nrrd", handle.read())}
    _error(ann1.post(f"{base}/cases", files=files, data={"name": "nope"}), 403, "forbidden")
    _error(ann1.put(f"{base}/members/{team['names']['ann2']}", json={"roles": ["admin"]}), 403, "forbidden")
    _error(ann1.post(f"{base}/exports", json={"format": "nnunet"}), 403, "forbidden")
    _error(ann1.get(f"{base}/progress"), 403, "forbidden")
    _error(ann1.get(f"{base}/audit"), 403, "forbidden")
    _error(ann1.post(f"{base}/tasks/claim", json={"kind": "review"}), 403, "forbidden")
    _error(rev.post(f"{base}/tasks/claim", json={"kind": "annotate"}), 403, "forbidden")
    _error(padmin.post(f"{base}/tasks/claim", json={}), 403, "forbidden")  # admins manage; they do not read
    _error(padmin.post("/api/v1/projects", json={"name": "p", "protocol_id": "abdominal-organs"}), 403, "forbidden")
    _error(ann1.post("/api/v1/users", json={"name": "sneaky"}), 403, "forbidden")
    _error(ann1.get("/api/v1/audit/verify"), 403, "forbidden")
    assert rev.ok(rev.get(f"{base}/progress"))["cases"]["total"] == 1
    assert padmin.ok(padmin.get(f"{base}/members"))


def test_wrong_project_is_not_found(team):
    users, project, other = team["users"], team["project"], team["other"]
    outsider, ann1 = users["outsider"], users["ann1"]
    for path in ("", "/cases", f"/cases/{team['case']['id']}", f"/submissions/{team['submission']}/file"):
        _error(outsider.get(f"/api/v1/projects/{project}{path}"), 404, "project_not_found")
    _error(ann1.get(f"/api/v1/projects/{other}"), 404, "project_not_found")
    _error(ann1.get("/api/v1/projects/999999"), 404, "project_not_found")
    # a submission of one project asked for through another
    _error(outsider.get(f"/api/v1/projects/{other}/submissions/{team['submission']}/file"), 404, "submission_not_found")


def test_lease_fencing(team):
    users, project, task2 = team["users"], team["project"], team["task2"]
    ann1, ann2 = users["ann1"], users["ann2"]
    base = f"/api/v1/projects/{project}/tasks/{task2['id']}"
    # another user, even with the lease id, cannot use it
    _error(ann1.post(f"{base}/heartbeat", json={"lease_id": task2["lease_id"]}), 409, "lease_lost")
    _error(ann2.post(f"{base}/heartbeat", json={"lease_id": "not-the-lease"}), 409, "lease_mismatch")
    assert ann2.ok(ann2.post(f"{base}/heartbeat", json={"lease_id": task2["lease_id"]}))["state"] == "leased"


def test_token_revocation_and_expiry(queue):
    import time

    user = queue.admin.new_user(unique("tokens"))
    extra = user.ok(user.post("/api/v1/me/tokens", json={"label": "laptop"}), 201)
    short = user.ok(user.post("/api/v1/me/tokens", json={"label": "short", "expires_in_s": 1}), 201)
    laptop, brief = Api(queue.url, extra["token"]), Api(queue.url, short["token"])
    assert laptop.ok(laptop.get("/api/v1/me"))["name"] == user.name
    user.ok(user.delete(f"/api/v1/me/tokens/{extra['id']}"))
    _error(laptop.get("/api/v1/me"), 401, "token_revoked")
    time.sleep(1.2)
    _error(brief.get("/api/v1/me"), 401, "token_expired")
    listed = user.ok(user.get("/api/v1/me/tokens"))
    assert [t["revoked"] for t in listed] == [False, True, False]
