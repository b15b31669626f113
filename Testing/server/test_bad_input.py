"""Bad input gets a 4xx JSON error that names the problem, and the server stays up."""

from __future__ import annotations

import gzip
import json

import pytest

from .harness import refused, tiny_geometry, tiny_metadata, tiny_segmentation, unique

LIMIT = 4 * 1024 * 1024  # the module's servers run with --max-upload-mb 4


@pytest.fixture(scope="module")
def reader(queue, tiny_image_file):
    """A reader holding a lease on a task of a tiny case (a fresh lease per test)."""
    admin = queue.admin
    user = admin.new_user(unique("reader"))
    project = admin.new_project(unique("bad-input"), readers=1, review=False)
    admin.set_roles(project, user.name, "annotator")
    image = admin.upload_image(project, tiny_image_file)
    cases = [{"name": f"c{i}", "image_sha256": image["sha256"]} for i in range(40)]
    admin.ok(admin.post(f"/api/v1/projects/{project}/cases/bulk", json={"cases": cases}), 201)
    return user, project


@pytest.fixture
def lease(reader):
    user, project = reader
    task = user.claim(project)
    assert task is not None
    return user, project, task


TINY_METADATA = json.dumps(tiny_metadata(1))


def _post_file(user, project, task, name: str, content: bytes, metadata=TINY_METADATA, **kw):
    files = {"segmentation": (name, content, "application/octet-stream")}
    data = {"lease_id": task["lease_id"], "metadata": metadata}
    return user.post(f"/api/v1/projects/{project}/tasks/{task['id']}/submissions", files=files, data=data, **kw)


def _seg_bytes(tmp_path, **kw) -> bytes:
    return tiny_segmentation(tmp_path / "s.seg.nrrd", **kw).read_bytes()


def test_oversized_upload(queue, lease):
    user, project, task = lease
    body = refused(queue, _post_file(user, project, task, "big.seg.nrrd", b"\0" * (LIMIT + 1)), 413, "upload_too_large")
    assert body["limit_bytes"] == LIMIT

    def chunks():  # no Content-Length: the limit is enforced on the streamed bytes
        yield (
            b'--abc\r\nContent-Disposition: form-data; name="segmentation"; filename="big.seg.nrrd"\r\n'
            b"Content-Type: application/octet-stream\r\n\r\n"
        )
        for _ in range(LIMIT // 65536 + 2):
            yield b"x" * 65536
        yield b"\r\n--abc--\r\n"

    headers = {"Content-Type": "multipart/form-data; boundary=abc"}
    url = f"/api/v1/projects/{project}/tasks/{task['id']}/submissions"
    refused(queue, user.post(url, content=chunks(), headers=headers), 413, "upload_too_large")


def test_wrong_content_type(queue, lease, tmp_path):
    user, project, task = lease
    url = f"/api/v1/projects/{project}/tasks/{task['id']}/submissions"
    refused(queue, user.post(url, json={"lease_id": task["lease_id"]}), 415, "unsupported_media_type", "multipart")
    response = _post_file(user, project, task, "notes.txt", b"hello")
    refused(queue, response, 415, "unsupported_file_type", "notes.txt")
    refused(queue, user.post(f"/api/v1/projects/{project}/tasks/claim", content=b"{", headers={
        "Content-Type": "application/json"}), 400, "malformed_json")  # fmt: skip


def test_truncated_nrrd(queue, lease, tmp_path):
    user, project, task = lease
    whole = _seg_bytes(tmp_path)
    response = _post_file(user, project, task, "cut.seg.nrrd", whole[: len(whole) - 40])
    refused(queue, response, 422, "invalid_segmentation", "cut.seg.nrrd")
    header_only = whole[: whole.index(b"\n\n") - 5]
    refused(queue, _post_file(user, project, task, "h.seg.nrrd", header_only), 422, "invalid_segmentation")
    refused(queue, _post_file(user, project, task, "x.seg.nrrd", b"not a nrrd"), 422, "invalid_segmentation")


def test_absurd_dimensions_are_refused_from_the_header(queue, lease, reader):
    user, project, task = lease
    header = (
        b"NRRD0004\ntype: unsigned char\ndimension: 3\nsizes: 100000 100000 100000\n"
        b"space directions: (2,0,0) (0,2,0) (0,0,3)\nspace: left-posterior-superior\nencoding: gzip\n\n"
    )
    content = header + gzip.compress(b"\0" * 1000)
    body = refused(queue, _post_file(user, project, task, "huge.seg.nrrd", content), 422, "image_too_large")
    assert body["sizes"] == [100000, 100000, 100000]
    admin = queue.admin
    files = {"image": ("huge.nrrd", content, "application/octet-stream")}
    refused(queue, admin.post(f"/api/v1/projects/{reader[1]}/images", files=files), 422, "image_too_large")


def test_detached_nrrd_data_file(queue, lease):
    user, project, task = lease
    content = b"NRRD0004\ntype: short\ndimension: 3\nsizes: 12 10 6\ndata file: /etc/passwd\nencoding: raw\n\n"
    refused(queue, _post_file(user, project, task, "d.seg.nrrd", content), 422, "invalid_segmentation", "data file")


def test_geometry_mismatch(queue, lease, tmp_path):
    user, project, task = lease
    content = _seg_bytes(tmp_path, geometry=tiny_geometry(spacing=(2.0, 2.0, 5.0)))
    body = refused(queue, _post_file(user, project, task, "g.seg.nrrd", content), 422, "geometry_mismatch", "spacing")
    assert any("spacing 2 x 2 x 5 instead of 2 x 2 x 3" in p for p in body["problems"])


def test_unknown_segment(queue, lease, tmp_path):
    user, project, task = lease
    content = _seg_bytes(tmp_path, structure_ids=("liver", "spleen"), name="Banana")
    body = refused(queue, _post_file(user, project, task, "u.seg.nrrd", content), 422, "unknown_segment", "Banana")
    assert body["segments"] == ["Banana"]


@pytest.mark.parametrize("name", ["../../etc/passwd.seg.nrrd", "/abs/x.seg.nrrd", "a\\b.seg.nrrd", ".hidden.seg.nrrd"])
def test_path_like_filenames(queue, lease, tmp_path, name):
    user, project, task = lease
    refused(queue, _post_file(user, project, task, name, _seg_bytes(tmp_path)), 400, "bad_filename")


def test_malformed_metadata(queue, lease, tmp_path):
    user, project, task = lease
    content = _seg_bytes(tmp_path)
    for metadata, words in [
        ("{not json", ("not valid JSON",)),
        ("[1, 2]", ("JSON object",)),
        ('{"time_spent_s": -5}', ("time_spent_s",)),
        ('{"time_spent_s": NaN}', ("NaN",)),
        ('{"time_spent_s": 3, "segments": {"appendix": {}}}', ("appendix",)),
    ]:
        response = _post_file(user, project, task, "m.seg.nrrd", content, metadata=metadata)
        refused(queue, response, 422, "invalid_metadata", *words)
    # nothing was stored: the lease still submits, once
    accepted = _post_file(user, project, task, "ok.seg.nrrd", content)
    assert accepted.status_code == 201, accepted.text
    again = _post_file(user, project, task, "ok.seg.nrrd", content)
    refused(queue, again, 409, "already_submitted")


def test_idempotency_key_reused_for_other_content(queue, lease, tmp_path):
    user, project, task = lease
    key = unique("key")
    first = _post_file(user, project, task, "a.seg.nrrd", _seg_bytes(tmp_path), headers={"Idempotency-Key": key})
    assert first.status_code == 201
    other = _post_file(
        user, project, task, "a.seg.nrrd", _seg_bytes(tmp_path, seed=1), headers={"Idempotency-Key": key}
    )
    refused(queue, other, 409, "idempotency_key_reused")


def test_bad_json_bodies(queue, reader):
    admin, project = queue.admin, reader[1]
    refused(queue, admin.post("/api/v1/projects", json={"name": "x"}), 422, "invalid_request")
    body = {"name": unique("p"), "protocol": {"id": "broken"}}
    problems = refused(queue, admin.post("/api/v1/projects", json=body), 422, "invalid_protocol")["problems"]
    assert any("$" in problem for problem in problems)
    refused(queue, admin.post("/api/v1/projects", json={"name": unique("p"), "protocol_id": "nope"}), 422,
             "unknown_protocol")  # fmt: skip
    bulk = {"cases": [{"name": "z", "image_sha256": "0" * 64}]}
    refused(queue, admin.post(f"/api/v1/projects/{project}/cases/bulk", json=bulk), 422, "unknown_image")
    nul = json.dumps({"cases": [{"name": "\u0000"}]})
    response = admin.post(
        f"/api/v1/projects/{project}/cases/bulk", content=nul, headers={"Content-Type": "application/json"}
    )
    refused(queue, response, 422, "invalid_request")
    refused(queue, admin.get("/api/v1/projects/99999999999"), 422, "invalid_request")
    refused(queue, admin.get("/api/v1/nowhere"), 404, "not_found")
    refused(queue, admin.delete("/api/v1/projects"), 405, "method_not_allowed")
