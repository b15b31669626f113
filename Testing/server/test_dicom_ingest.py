"""A zipped DICOM series as a case: de-identified on ingest, checked, stored as one volume; refusals that
store nothing (burned-in risk, a missing slice, not a zip) and the admin-only rule, on the real server."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from MedAnnotAssistLib.core.dicom.series import read_series

from .harness import unique

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


@pytest.fixture(scope="module")
def dicom_queue(tmp_path_factory, database_for):
    from .conftest import Queue

    queue = Queue(tmp_path_factory.mktemp("queue-dicom"), database_for("sqlite"))
    yield queue
    queue.stop()


def _zip(files: dict[str, Path | bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        for name, content in files.items():
            zipped.writestr(name, content if isinstance(content, bytes) else content.read_bytes())
    return buffer.getvalue()


def _upload(api, project: int, archive: bytes, name: str, filename: str = "series.zip"):
    files = {"series": (filename, archive, "application/zip")}
    return api.post(f"/api/v1/projects/{project}/cases/dicom", files=files, data={"name": name})


def _case_count(api, project: int) -> int:
    return len(api.ok(api.get(f"/api/v1/projects/{project}/cases")))


def test_series_is_deidentified_and_stored_as_its_volume(dicom_queue, sample_dir, tmp_path):
    admin = dicom_queue.admin
    project = admin.new_project(unique("dicom"), readers=1, review=False)
    slices = sorted((sample_dir / "example_ct_dicom").iterdir())
    # member paths are the uploader's (a patient folder, even a path that climbs out): never used as paths
    members = {f"Doe^Jane/CT/{path.name}": path for path in slices[1:]}
    members["../../escaped/first.dcm"] = slices[0]
    members["Doe^Jane/notes.txt"] = b"referral letter"
    answer = admin.ok(_upload(admin, project, _zip(members), "ct-1"), 201)

    deid = answer["deidentification"]
    assert deid["table_edition"] == "2024b" and any("Modified Dates" in option for option in deid["options"])
    assert deid["files_read"] == 20 and deid["files_used"] == 20 and deid["modality"] == "CT"
    assert [item["file"] for item in deid["skipped"]] == ["Doe^Jane/notes.txt"]
    assert answer["image"]["geometry"]["size"] == [512, 512, 20]
    assert not (tmp_path.parent / "escaped").exists() and not Path("/escaped").exists()

    stored = admin.get(f"/api/v1/projects/{project}/cases/{answer['id']}/image")
    assert stored.status_code == 200
    (tmp_path / "stored.nrrd").write_bytes(stored.content)
    image = sitk.ReadImage(str(tmp_path / "stored.nrrd"))
    original = read_series(sample_dir / "example_ct_dicom").image
    assert np.array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(original))
    assert image.GetSpacing() == pytest.approx(original.GetSpacing())
    assert image.GetOrigin() == pytest.approx(original.GetOrigin())
    assert b"Doe^Jane" not in stored.content and b"20221208" not in stored.content  # no name, no study date

    key = dicom_queue.data_dir / "deid-keys" / f"project-{project}.key"
    assert key.is_file() and (key.stat().st_mode & 0o777) == 0o600
    events = admin.ok(admin.get(f"/api/v1/projects/{project}/audit"))
    assert _case_count(admin, project) == 1 and any(e.get("action") == "case.create" for e in events)
    assert not list((dicom_queue.data_dir / "blobs" / "tmp").glob("dicom-*"))  # the work folder is gone


def test_burned_in_risk_refuses_the_upload_and_stores_nothing(dicom_queue, sample_dir):
    admin = dicom_queue.admin
    project = admin.new_project(unique("dicom-us"), readers=1, review=False)
    members = {f"ct/{p.name}": p for p in sorted((sample_dir / "example_ct_dicom").iterdir())}
    members["echo/screen.dcm"] = PYDICOM_FILES / "ExplVR_BigEnd.dcm"  # an ultrasound image without BurnedInAnnotation
    refused = _upload(admin, project, _zip(members), "ct-2")
    assert refused.status_code == 422
    body = refused.json()
    assert body["code"] == "deid_review_needed" and "nothing was stored" in body["message"]
    assert [item["file"] for item in body["files"]] == ["echo/screen.dcm"]
    assert "US" in body["files"][0]["reason"]
    assert _case_count(admin, project) == 0


def test_missing_slice_and_not_a_zip_are_clear_4xx(dicom_queue, sample_dir):
    admin = dicom_queue.admin
    project = admin.new_project(unique("dicom-bad"), readers=1, review=False)
    by_z = sorted(
        (sample_dir / "example_ct_dicom").iterdir(),
        key=lambda p: float(pydicom.dcmread(p, stop_before_pixels=True).SliceLocation),
    )
    gapped = {p.name: p for index, p in enumerate(by_z) if index != 7}
    missing = _upload(admin, project, _zip(gapped), "gapped")
    assert missing.status_code == 422 and missing.json()["code"] == "bad_dicom_series"
    message = missing.json()["message"]
    assert "1 slice(s) missing between" in message and "gap 4.000 mm" in message
    assert "/tmp" not in message and "dicom-" not in message  # the server's folders stay private
    garbage = _upload(admin, project, b"not a zip at all", "garbage")
    assert garbage.status_code == 415 and "not a zip archive" in garbage.json()["message"]
    wrong_name = _upload(admin, project, _zip(gapped), "named", filename="series.tar")
    assert wrong_name.status_code == 415 and wrong_name.json()["code"] == "unsupported_file_type"
    empty = _upload(admin, project, _zip({"readme.txt": b"hello"}), "empty")
    assert empty.status_code == 422 and empty.json()["code"] == "no_dicom"
    assert _case_count(admin, project) == 0
    assert admin.get("/api/v1/health").json()["status"] == "ok"


def test_only_admins_upload_series(dicom_queue, sample_dir):
    admin = dicom_queue.admin
    project = admin.new_project(unique("dicom-roles"), readers=1, review=False)
    reader = admin.new_user(unique("reader"))
    admin.set_roles(project, reader.name, "annotator")
    one = sorted((sample_dir / "example_ct_dicom").iterdir())[0]
    refused = _upload(reader, project, _zip({"a.dcm": one}), "x")
    assert refused.status_code == 403


def test_a_series_volume_is_reachable_only_through_its_project(dicom_queue, sample_dir):
    admin = dicom_queue.admin
    first, second = (admin.new_project(unique(f"dicom-{n}"), readers=1, review=False) for n in ("p1", "p2"))
    archive = _zip({p.name: p for p in sorted((sample_dir / "example_ct_dicom").iterdir())})
    sha = admin.ok(_upload(admin, first, archive, "ct"), 201)["image"]["sha256"]

    def bulk(project: int, name: str):
        return admin.post(
            f"/api/v1/projects/{project}/cases/bulk", json={"cases": [{"name": name, "image_sha256": sha}]}
        )

    assert admin.ok(bulk(first, "ct-again"), 201)["created"] == 1  # the ingest linked the volume to its project
    refused = bulk(second, "ct")
    assert refused.status_code == 422 and refused.json()["code"] == "unknown_image", refused.text
    # the same series uploaded into the second project is its own (pixels and grid alike: the same volume)
    assert admin.ok(_upload(admin, second, archive, "ct"), 201)["image"]["sha256"] == sha
    assert admin.ok(bulk(second, "ct-again"), 201)["created"] == 1
