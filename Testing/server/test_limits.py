"""Bounded resources: JSON depth and size, temporary files on every refusal, truncated NIfTI images and zip
archives counted before they are unpacked, on the real server (memory: test_memory.py)."""

from __future__ import annotations

import gzip
import io
import json
import struct
import time
import zipfile

import httpx
import numpy as np
import pytest
import SimpleITK as sitk

from medannotassist_server.errors import ApiError
from medannotassist_server.jsonlimits import MAX_JSON_DEPTH, lone_surrogate_path, too_deep

from .harness import refused, tiny_geometry, tiny_metadata, tiny_segmentation, unique

# metadata a tiny segmentation is accepted with: overrides of the rules no organ of real size can meet here
TINY = json.dumps(tiny_metadata(1))


@pytest.fixture(scope="module")
def limits_queue(tmp_path_factory, database_for):
    from .conftest import Queue

    queue = Queue(tmp_path_factory.mktemp("queue-limits"), database_for("sqlite"))
    yield queue
    queue.stop()


@pytest.fixture(scope="module")
def study(limits_queue, tiny_image_file):
    """A one-reader project with review: a reader, a reviewer, and 30 cases of the tiny image."""
    admin = limits_queue.admin
    reader, reviewer = admin.new_user(unique("reader")), admin.new_user(unique("reviewer"))
    project = admin.new_project(unique("limits"), readers=1, review=True)
    admin.set_roles(project, reader.name, "annotator")
    admin.set_roles(project, reviewer.name, "reviewer")
    image = admin.upload_image(project, tiny_image_file)
    cases = [{"name": f"c{i}", "image_sha256": image["sha256"]} for i in range(30)]
    admin.ok(admin.post(f"/api/v1/projects/{project}/cases/bulk", json={"cases": cases}), 201)
    return project, reader, reviewer


def _temporary_files(queue) -> list[str]:
    return sorted(path.name for path in (queue.data_dir / "blobs" / "tmp").iterdir())


def _submit(user, project, task, content: bytes, metadata: str, name: str = "s.seg.nrrd"):
    files = {"segmentation": (name, content, "application/octet-stream")}
    data = {"lease_id": task["lease_id"], "metadata": metadata}
    return user.post(f"/api/v1/projects/{project}/tasks/{task['id']}/submissions", files=files, data=data)


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_depth_is_measured_outside_strings():
    assert too_deep(_nested(MAX_JSON_DEPTH + 1)) and not too_deep(_nested(MAX_JSON_DEPTH))
    assert not too_deep(json.dumps({"a": "[" * 10_000, "b": '\\"{{{{' * 1000}))
    assert too_deep('{"a": "\\\\", "b": ' + _nested(MAX_JSON_DEPTH + 1) + "}")
    assert lone_surrogate_path({"a": [1, {"b": "ok", "c": "x\ud800"}]}, "metadata") == "metadata.a[1].c"
    assert lone_surrogate_path({"\udfff": 1}, "body") == "body (a key)"
    assert lone_surrogate_path({"emoji": "\U0001f600"}, "body") is None


def test_deeply_nested_json_isrefused(limits_queue, study, tmp_path):
    project, reader, reviewer = study
    queue, admin = limits_queue, limits_queue.admin
    task = reader.claim(project)
    seg = tiny_segmentation(tmp_path / "s.seg.nrrd").read_bytes()
    json_bodies = [
        (admin, f"/api/v1/projects/{project}/cases/bulk"),
        (admin, "/api/v1/projects"),
        (reader, f"/api/v1/projects/{project}/tasks/claim"),
        (reviewer, f"/api/v1/projects/{project}/tasks/{task['id']}/review"),
        (reader, f"/api/v1/projects/{project}/tasks/{task['id']}/heartbeat"),
    ]
    for depth in (MAX_JSON_DEPTH + 1, 5_000, 200_000):
        metadata = '{"time_spent_s": 1, "x": ' + _nested(depth) + "}"
        body = refused(queue, _submit(reader, project, task, seg, metadata), 422, "json_too_deep", "metadata")
        assert body["limit_depth"] == MAX_JSON_DEPTH
        for user, path in json_bodies:
            content = '{"lease_id": "x", "decision": "approve", "structures": ' + _nested(depth) + "}"
            response = user.post(path, content=content, headers={"Content-Type": "application/json"})
            refused(queue, response, 422, "json_too_deep", "request body")
    too_large = json.dumps({"cases": [{"name": "x" * 1000}] * 17_000})
    response = admin.post(f"/api/v1/projects/{project}/cases/bulk", content=too_large)  # no content type: JSON
    assert refused(queue, response, 422, "json_too_large")["limit_bytes"] == 16 * 1024 * 1024
    # within the limits, nesting is the client's business
    accepted = _submit(reader, project, task, seg, TINY[:-1] + ', "x": ' + _nested(MAX_JSON_DEPTH - 1) + "}")
    assert accepted.status_code == 201, accepted.text


def test_lone_surrogates_are_refused_naming_the_field(limits_queue, study, tmp_path):
    project, reader, _reviewer = study
    queue, admin = limits_queue, limits_queue.admin
    task = reader.claim(project)
    seg = tiny_segmentation(tmp_path / "s.seg.nrrd").read_bytes()
    assert _temporary_files(queue) == []
    responses = [_submit(reader, project, task, seg, '{"time_spent_s": 1, "note": "\\ud800"}') for _ in range(20)]
    assert _temporary_files(queue) == []
    for response in responses:
        refused(queue, response, 422, "invalid_metadata", "metadata.note", "Unicode")
    nested = '{"time_spent_s": 1, "segments": {"liver": {"provenance": {"tool": "a\\udc00"}}}}'
    response = _submit(reader, project, task, seg, nested)
    refused(queue, response, 422, "invalid_metadata", "metadata.segments.liver.provenance.tool")
    assert _temporary_files(queue) == []
    body = '{"name": "p-surrogate", "protocol": {"id": "x", "structures": [{"name": "\\ud83d"}]}}'
    response = admin.post("/api/v1/projects", content=body, headers={"Content-Type": "application/json"})
    refused(queue, response, 422, "invalid_value", "body.protocol.structures[0].name")
    # a surrogate pair (an emoji escaped by an ASCII-only encoder) is text like any other
    accepted = _submit(reader, project, task, seg, TINY[:-1] + ', "note": "\\ud83d\\ude00"}')
    assert accepted.status_code == 201, accepted.text


def _nifti(tmp_path, name: str = "ct.nii") -> bytes:
    rng = np.random.default_rng(3)
    image = sitk.GetImageFromArray(rng.integers(-100, 200, (20, 40, 40)).astype(np.int16))
    sitk.WriteImage(image, str(tmp_path / name), useCompression=False)
    return (tmp_path / name).read_bytes()


def test_truncated_nifti_is_refused_naming_the_file(limits_queue, study, tmp_path):
    project = study[0]
    queue, admin = limits_queue, limits_queue.admin
    raw = _nifti(tmp_path)
    whole = gzip.compress(raw)

    def upload(name: str, content: bytes) -> httpx.Response:
        return admin.post(f"/api/v1/projects/{project}/images", files={"image": (name, content)})

    refused(queue, upload("cut.nii.gz", whole[: len(whole) // 2]), 422, "invalid_image", "cut.nii.gz", "gzip")
    short = gzip.compress(raw[:-1000])  # a complete gzip stream holding too little voxel data
    body = refused(queue, upload("short.nii.gz", short), 422, "invalid_image", "short.nii.gz", "truncated")
    assert f"{len(raw) - 1000} bytes" in body["message"] and f"declares {len(raw)}" in body["message"]
    refused(queue, upload("short.nii", raw[:-1000]), 422, "invalid_image", "short.nii", "truncated")
    assert _temporary_files(queue) == []
    assert upload("whole.nii.gz", whole).status_code == 201
    assert upload("whole.nii", raw).status_code == 201


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        for name, content in members.items():
            zipped.writestr(name, content)
    return buffer.getvalue()


def _upload_series(admin, project: int, archive: bytes, name: str) -> httpx.Response:
    files = {"series": ("series.zip", archive, "application/zip")}
    return admin.post(f"/api/v1/projects/{project}/cases/dicom", files=files, data={"name": name})


def test_zip_members_are_counted_before_unpacking(limits_queue, study):
    project = study[0]
    queue, admin = limits_queue, limits_queue.admin
    empty = _zip({f"slice-{index:05d}.dcm": b"" for index in range(19_999)})
    started = time.perf_counter()
    response = _upload_series(admin, project, empty, unique("z"))
    elapsed = time.perf_counter() - started
    assert elapsed < 4.0, f"{elapsed:.1f} s to refuse 19,999 empty members (was 5-14 s when each was unpacked)"
    body = refused(queue, response, 422, "no_dicom")
    assert body["files"][0] == {"file": "slice-00000.dcm", "reason": "not a DICOM file (0 bytes)"}
    # an end record announcing more entries than the limit is refused from the record alone
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 30_000, 30_000, 46 * 30_000, 0, 0)
    body = refused(queue, _upload_series(admin, project, end, unique("z")), 413, "upload_too_large", "30000 files")
    # and a directory holding more entries than its end record admits is counted entry by entry
    many = bytearray(_zip({f"m{index}": b"" for index in range(20_001)}))
    at = many.rfind(b"PK\x05\x06")
    many[at + 8 : at + 12] = struct.pack("<2H", 3, 3)
    refused(queue, _upload_series(admin, project, bytes(many), unique("z")), 413, "upload_too_large", "20001 files")
    assert _temporary_files(queue) == []


def test_refused_uploads_leave_no_temporary_file(limits_queue, study, tmp_path):
    """Every way an upload is refused after it was received removes its temporary file."""
    project, reader, reviewer = study
    queue, admin = limits_queue, limits_queue.admin
    good = tiny_segmentation(tmp_path / "good.seg.nrrd").read_bytes()
    wrong_grid = tiny_segmentation(tmp_path / "g.seg.nrrd", geometry=tiny_geometry(spacing=(2.0, 2.0, 5.0)))
    banana = tiny_segmentation(tmp_path / "b.seg.nrrd", name="Banana").read_bytes()
    task = reader.claim(project)
    refused(queue, _submit(reader, project, task, wrong_grid.read_bytes(), '{"time_spent_s": 1}'), 422,
             "geometry_mismatch")  # fmt: skip
    refused(queue, _submit(reader, project, task, banana, '{"time_spent_s": 1}'), 422, "unknown_segment")
    refused(queue, _submit(reader, project, task, good[:-40], '{"time_spent_s": 1}'), 422, "invalid_segmentation")
    assert _submit(reader, project, task, good, TINY).status_code == 201
    review = reviewer.claim(project, kind="review")
    files = {"segmentation": ("e.seg.nrrd", banana)}
    url = f"/api/v1/projects/{project}/tasks/{review['id']}/review/edited"
    refused(queue, reviewer.post(url, files=files, data={"lease_id": review["lease_id"]}), 422, "unknown_segment")
    url = f"/api/v1/projects/{project}/cases/{task['case_id']}/ai-segmentation"
    refused(queue, admin.put(url, files={"segmentation": ("ai.seg.nrrd", banana)}), 422, "unknown_segment")
    url = f"/api/v1/projects/{project}/images"
    refused(queue, admin.post(url, files={"image": ("x.nrrd", b"NRRD0004\nnot really\n\n")}), 422, "invalid_image")
    refused(queue, _upload_series(admin, project, b"not a zip", unique("z")), 415, "unsupported_file_type")
    refused(queue, _upload_series(admin, project, _zip({"a.txt": b"x" * 500}), unique("z")), 422, "no_dicom")
    assert _temporary_files(queue) == []


def test_members_are_counted_in_zip64_archives_too(tmp_path):
    from medannotassist_server.dicom_ingest import count_members

    path = tmp_path / "many.zip"
    path.write_bytes(_zip({f"m{index}": b"" for index in range(70_000)}))  # past 65,535: a ZIP64 end record
    assert count_members(path, 100_000) == 70_000
    with pytest.raises(ApiError) as refused:
        count_members(path, 20_000)
    assert refused.value.status == 413 and "70000 files" in refused.value.message


def test_stale_work_folders_are_cleaned_on_start(tmp_path):
    import os

    from medannotassist_server.blobs import BlobStore

    store = BlobStore(tmp_path / "blobs")
    stale = [store.temporary(".seg.nrrd"), store.tmp / "dicom-abc", store.tmp / "final-xyz"]
    for folder in stale[1:]:
        (folder / "received").mkdir(parents=True)
        (folder / "received" / "00000.dcm").write_bytes(b"x")
    fresh = store.temporary(".zip")
    for path in stale:
        os.utime(path, (time.time() - 7200, time.time() - 7200))
    assert store.clean_temporary() == 3
    assert [path.name for path in store.tmp.iterdir()] == [fresh.name]
