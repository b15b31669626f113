"""Queue order and the smaller workflows: AI uncertainty as priority, release, DICOMweb references,
granting roles from the command line, and a MONAI datalist export."""

from __future__ import annotations

import io
import json
import zipfile

from .harness import admin_command, tiny_segmentation, unique


def test_priority_then_age_and_ai_uncertainty(queue, tiny_image_file, tmp_path):
    admin = queue.admin
    project = admin.new_project(unique("order"), readers=1, review=False)
    reader = admin.new_user(unique("reader"))
    admin.set_roles(project, reader.name, "annotator")
    image = admin.upload_image(project, tiny_image_file)
    cases = [
        {"name": "old-low", "image_sha256": image["sha256"], "priority": 0.1},
        {"name": "new-low", "image_sha256": image["sha256"], "priority": 0.1},
        {"name": "high", "image_sha256": image["sha256"], "priority": 0.5},
        {"name": "uncertain", "image_sha256": image["sha256"]},
    ]
    ids = admin.ok(admin.post(f"/api/v1/projects/{project}/cases/bulk", json={"cases": cases}), 201)["case_ids"]
    # the AI pre-segmentation's uncertainty becomes the case's priority: the least certain comes first
    with open(tiny_segmentation(tmp_path / "ai.seg.nrrd", structure_ids=("liver", "spleen")), "rb") as handle:
        files = {"segmentation": ("ai.seg.nrrd", handle.read())}
    attached = admin.put(
        f"/api/v1/projects/{project}/cases/{ids[3]}/ai-segmentation",
        files=files,
        data={"uncertainty": "0.9", "engine": "ct-threshold 1.0"},
    )
    assert admin.ok(attached)["priority"] == 0.9
    ai = reader.get(f"/api/v1/projects/{project}/cases/{ids[3]}/ai-segmentation")
    assert ai.status_code == 200 and ai.content == files["segmentation"][1]
    order = []
    for _ in range(4):
        task = reader.claim(project)
        order.append(task["case_id"])
        reader.ok(
            reader.post(f"/api/v1/projects/{project}/tasks/{task['id']}/release", json={"lease_id": task["lease_id"]})
        )
        submitted = reader.submit(project, reader.claim(project), tiny_segmentation(tmp_path / "s.seg.nrrd"))
        assert submitted.status_code == 201, submitted.text
    assert order == [ids[3], ids[2], ids[0], ids[1]]


def test_release_returns_the_task_to_others(queue, tiny_image_file):
    admin = queue.admin
    project = admin.new_project(unique("release"), readers=1)
    first, second = admin.new_user(unique("first")), admin.new_user(unique("second"))
    admin.set_roles(project, first.name, "annotator")
    admin.set_roles(project, second.name, "annotator")
    admin.upload_case(project, tiny_image_file, "only")
    task = first.claim(project)
    assert second.claim(project) is None
    released = first.ok(
        first.post(f"/api/v1/projects/{project}/tasks/{task['id']}/release", json={"lease_id": task["lease_id"]})
    )
    assert released["state"] == "queued"
    assert second.claim(project)["id"] == task["id"]
    again = first.post(f"/api/v1/projects/{project}/tasks/{task['id']}/release", json={"lease_id": task["lease_id"]})
    assert again.status_code == 409 and again.json()["code"] == "lease_lost"


def test_a_release_reason_is_checked_and_audited(queue, tiny_image_file):
    """A reader who skips a case says why: the reason is in the task.release event; a blank one is refused."""
    admin = queue.admin
    project = admin.new_project(unique("skip"), readers=1)
    reader = admin.new_user(unique("skipper"))
    admin.set_roles(project, reader.name, "annotator")
    admin.upload_case(project, tiny_image_file, "skipped")
    task = reader.claim(project)
    path = f"/api/v1/projects/{project}/tasks/{task['id']}/release"
    for bad in (" ", "x" * 2001):
        refused = reader.post(path, json={"lease_id": task["lease_id"], "reason": bad})
        assert refused.status_code == 422 and "reason" in refused.text, refused.text
    reader.ok(reader.post(path, json={"lease_id": task["lease_id"], "reason": "the image is cut at the diaphragm"}))
    events = admin.ok(admin.get(f"/api/v1/projects/{project}/audit"))
    [released] = [e for e in events if e["action"] == "task.release"]
    assert released["entity_id"] == str(task["id"]) and released["actor"] == reader.name
    assert released["after"] == {"state": "queued", "holder_id": None, "reason": "the image is cut at the diaphragm"}


def test_dicomweb_reference_and_cli_grant(queue, tmp_path):
    admin = queue.admin
    name = unique("dicomweb")
    project = admin.new_project(name, readers=1)
    reference = {"url": "https://pacs.example.org/dicom-web", "study_uid": "1.2.826.0.1.3680043.8.498.1",
                 "series_uid": "1.2.826.0.1.3680043.8.498.2"}  # fmt: skip
    created = admin.ok(
        admin.post(
            f"/api/v1/projects/{project}/cases/bulk", json={"cases": [{"name": "pacs-1", "dicomweb": reference}]}
        ),
        201,
    )
    reader = admin.new_user(unique("pacs-reader"))
    granted = admin_command(
        "grant", reader.name, name, "annotator", data_dir=queue.data_dir, database_url=queue.database_url
    )
    assert granted.returncode == 0, granted.stderr
    assert reader.ok(reader.get("/api/v1/me"))["projects"][0]["roles"] == ["annotator"]
    case = reader.ok(reader.get(f"/api/v1/projects/{project}/cases/{created['case_ids'][0]}"))
    assert case["dicomweb"] == reference and case["image_sha256"] is None
    image = reader.get(f"/api/v1/projects/{project}/cases/{case['id']}/image")
    assert image.status_code == 404 and image.json()["code"] == "image_not_found"
    task = reader.claim(project)
    assert reader.submit(project, task, tiny_segmentation(tmp_path / "p.seg.nrrd")).status_code == 201
    unknown = admin_command(
        "grant", "nobody", name, "annotator", data_dir=queue.data_dir, database_url=queue.database_url
    )
    assert unknown.returncode == 2 and "no user named 'nobody'" in unknown.stderr


def test_monai_datalist_export(queue, tiny_image_file, tmp_path):
    admin = queue.admin
    project = admin.new_project(unique("monai"), readers=1, review=False)
    reader = admin.new_user(unique("reader"))
    admin.set_roles(project, reader.name, "annotator")
    admin.upload_case(project, tiny_image_file, "tiny case.1")
    admin.upload_case(project, tiny_image_file, "tiny case 2")
    for index in range(2):
        task = reader.claim(project)
        seg = tiny_segmentation(tmp_path / f"{index}.seg.nrrd", structure_ids=("liver", "spleen"), seed=index)
        assert reader.submit(project, task, seg).status_code == 201
    exported = admin.ok(
        admin.post(f"/api/v1/projects/{project}/exports", json={"format": "monai", "dataset_name": "tiny"}), 201
    )
    assert exported["cases"] == 2
    archive = zipfile.ZipFile(io.BytesIO(admin.get(exported["download"]).content))
    datalist = json.loads(archive.read("tiny/datalist.json"))
    assert datalist["labels"]["0"] == "background" and datalist["labels"]["1"] == "liver"
    names = set(archive.namelist())
    for item in datalist["training"]:
        assert f"tiny/{item['image']}" in names and f"tiny/{item['label']}" in names
    provenance = json.loads(archive.read("tiny/provenance.json"))
    assert [c["case"] for c in provenance["cases"]] == ["tiny case.1", "tiny case 2"]
    assert provenance["cases"][0]["readers"][0]["reader"] == reader.name and provenance["cases"][0]["reviewer"] is None
