"""One case from upload to export, over HTTP against the real server: two real readers, consensus, a
return to one reader, approval, an nnU-Net dataset, and the audit chain (broken by a direct DB edit)."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
import SimpleITK as sitk

from .conftest import BACKENDS
from .harness import SAMPLE_OVERRIDES, admin_command, wait_for_consensus


def _edit_audit_row(queue, seq: int) -> None:
    """Tamper with the database directly, as someone with file or SQL access would."""
    sql = "UPDATE audit_events SET actor = 'mallory' WHERE seq = :seq"
    if queue.database_url is None:
        import sqlite3

        with sqlite3.connect(queue.data_dir / "queue.sqlite3") as connection:
            connection.execute(sql.replace(":seq", "?"), (seq,))
    else:
        import psycopg

        with psycopg.connect(queue.database_url.replace("postgresql+psycopg", "postgresql")) as connection:
            connection.execute(sql.replace(":seq", "%s"), (seq,))


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_case_lifecycle_over_http(backend, start_queue, sample_dir, reader_files, tmp_path):
    queue = start_queue(backend)
    admin = queue.admin
    ann1, ann2, rev = admin.new_user("ann1"), admin.new_user("ann2"), admin.new_user("rev")
    project = admin.new_project("abdomen", "abdominal-organs", readers=2, review=True)
    admin.set_roles(project, "ann1", "annotator")
    admin.set_roles(project, "ann2", "annotator")
    admin.set_roles(project, "rev", "reviewer")
    base = f"/api/v1/projects/{project}"

    case = admin.upload_case(project, sample_dir / "example_ct_sm.nii.gz", "example_ct_sm")
    assert case["state"] == "annotating" and len(case["tasks"]) == 2
    assert case["image"]["geometry"]["size"] == [122, 101, 30]

    # two readers claim the two annotate tasks of the one case; a reader never gets both
    task1, task2 = ann1.claim(project), ann2.claim(project)
    assert {task1["id"], task2["id"]} == {t["id"] for t in case["tasks"]}
    assert ann1.claim(project) is None
    beat = ann1.ok(ann1.post(f"{base}/tasks/{task1['id']}/heartbeat", json={"lease_id": task1["lease_id"]}))
    assert beat["lease_expires_at"] >= task1["lease_expires_at"]

    metadata = {
        "time_spent_s": 845.0,
        "client": "MedAnnotAssist test",
        "segments": {
            "liver": {"state": "refined", "provenance": {"engine": "ct-threshold", "version": "1"},
                      "ai_vs_final": {"dice": 0.91, "hd95_mm": 4.2}},
        },
        "overrides": SAMPLE_OVERRIDES,
    }  # fmt: skip
    first = ann1.submit(project, task1, reader_files[0], metadata, key="ann1-case1-try1")
    assert first.status_code == 201, first.text
    retried = ann1.submit(project, task1, reader_files[0], metadata, key="ann1-case1-try1")
    assert retried.status_code == 201 and retried.json() == first.json()
    mine = ann1.ok(ann1.get(f"{base}/cases/{case['id']}/submissions"))
    assert len(mine) == 1 and mine[0]["metadata"]["segments"]["liver"]["ai_vs_final"]["dice"] == 0.91

    # blind: the second reader sees neither the first one's work nor a consensus
    sid1 = first.json()["submission_id"]
    assert ann2.get(f"{base}/submissions/{sid1}/file").json()["code"] == "submission_not_found"
    assert ann2.ok(ann2.get(f"{base}/cases/{case['id']}/submissions")) == []

    second = ann2.submit(
        project, task2, reader_files[1], {"time_spent_s": 610.0, "overrides": SAMPLE_OVERRIDES}, key="ann2-case1"
    )
    assert second.status_code == 201 and second.json()["case_complete"] is True
    # consensus is a background job: the reviewer's case shows it done and the review task open
    reviewed = wait_for_consensus(rev, project, case["id"])
    assert reviewed["state"] == "review" and reviewed["consensus"]["state"] == "done"

    consensus = rev.ok(rev.get(f"{base}/cases/{case['id']}/consensus"))
    assert consensus["readers"] == ["ann1", "ann2"] and consensus["round"] == 1
    liver = consensus["agreement"]["structures"]["Liver"]
    assert liver["pairwise"][0]["dice"] == pytest.approx(0.98136, abs=1e-4)
    for forbidden in ("consensus", "consensus/consensus", "final"):
        response = ann1.get(f"{base}/cases/{case['id']}/{forbidden}")
        assert response.status_code == 403 and response.json()["code"] == "blinded", forbidden
    assert rev.get(f"{base}/cases/{case['id']}/consensus/report").headers["content-type"].startswith("text/html")

    # the reviewer returns the case to ann2, who resubmits; a second round of consensus follows
    review1 = rev.claim(project)
    assert review1["kind"] == "review" and review1["case_id"] == case["id"]
    decision = {"lease_id": review1["lease_id"], "decision": "return",
                "returns": [{"reader": "ann2", "comment": "Please redraw the pancreas head."}]}  # fmt: skip
    returned = rev.ok(rev.post(f"{base}/tasks/{review1['id']}/review", json=decision))
    assert returned["case_state"] == "annotating" and returned["round"] == 2
    assert ann1.claim(project) is None
    again = ann2.claim(project)
    assert again["id"] == task2["id"] and again["comment"] == "Please redraw the pancreas head."
    resubmitted = ann2.submit(
        project, again, reader_files[1], {"time_spent_s": 120.0, "overrides": SAMPLE_OVERRIDES}, key="ann2-case1-round2"
    )
    assert resubmitted.status_code == 201 and resubmitted.json()["version"] == 2
    assert wait_for_consensus(rev, project, case["id"])["consensus"]["round"] == 2

    review2 = rev.claim(project)
    assert review2 is not None and review2["round"] == 2
    with open(reader_files[1], "rb") as handle:  # the reviewer's edited final (here: the fast reader's file)
        files = {"segmentation": ("edited.seg.nrrd", handle)}
        edited = rev.post(
            f"{base}/tasks/{review2['id']}/review/edited", files=files, data={"lease_id": review2["lease_id"]}
        )
    assert edited.status_code == 201, edited.text
    decisions = {"liver": {"action": "take_reader", "reader": "ann1"}, "spleen": {"action": "edited"}}
    approve = {"lease_id": review2["lease_id"], "decision": "approve", "structures": decisions}
    approve["overrides"] = SAMPLE_OVERRIDES[:1]  # the consensus pancreas is cut, as the readers' are
    approved = rev.ok(rev.post(f"{base}/tasks/{review2['id']}/review", json=approve))
    assert approved["case_state"] == "approved" and approved["final_sha256"]
    # once approved, readers may see each other's work
    assert ann2.get(f"{base}/submissions/{sid1}/file").status_code == 200

    progress = rev.ok(rev.get(f"{base}/progress"))
    assert progress["cases"] == {"total": 1, "approved": 1}
    readers = {r["reader"]: r for r in progress["readers"]}
    assert readers["ann1"]["submissions"] == 1 and readers["ann2"]["submissions"] == 2
    assert readers["ann1"]["mean_dice_with_other_readers"] > 0.5

    # export: a valid nnU-Net raw dataset with provenance
    exported = admin.ok(admin.post(f"{base}/exports", json={"format": "nnunet", "dataset_id": 501}), 201)
    assert exported["cases"] == 1
    archive = zipfile.ZipFile(io.BytesIO(admin.get(exported["download"]).content))
    root = "Dataset501_MedAnnotAssist"
    assert sorted(archive.namelist()) == sorted(
        [f"{root}/dataset.json", f"{root}/provenance.json", f"{root}/imagesTr/example_ct_sm_0000.nii.gz",
         f"{root}/labelsTr/example_ct_sm.nii.gz"]
    )  # fmt: skip
    archive.extractall(tmp_path)
    dataset = json.loads((tmp_path / root / "dataset.json").read_text())
    assert dataset["channel_names"] == {"0": "CT"} and dataset["numTraining"] == 1
    assert dataset["file_ending"] == ".nii.gz" and dataset["labels"]["background"] == 0
    assert sorted(dataset["labels"].values()) == list(range(len(dataset["labels"])))
    image = sitk.ReadImage(str(tmp_path / root / "imagesTr" / "example_ct_sm_0000.nii.gz"))
    label = sitk.ReadImage(str(tmp_path / root / "labelsTr" / "example_ct_sm.nii.gz"))
    assert image.GetSize() == label.GetSize() == (122, 101, 30)
    assert np.allclose(image.GetSpacing(), label.GetSpacing()) and np.allclose(image.GetOrigin(), label.GetOrigin())
    values = set(np.unique(sitk.GetArrayFromImage(label)).tolist())
    assert {0, dataset["labels"]["liver"], dataset["labels"]["spleen"]} <= values <= set(dataset["labels"].values())
    # the liver is ann1's, as the reviewer decided
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(sample_dir / "example_seg.nii.gz"))) == 5
    assert np.array_equal(sitk.GetArrayFromImage(label) == dataset["labels"]["liver"], truth)
    fast = sitk.GetArrayFromImage(sitk.ReadImage(str(sample_dir / "example_seg_fast.nii.gz"))) == 1  # spleen
    assert np.array_equal(sitk.GetArrayFromImage(label) == dataset["labels"]["spleen"], fast)
    provenance = json.loads((tmp_path / root / "provenance.json").read_text())
    entry = provenance["cases"][0]
    assert [r["reader"] for r in entry["readers"]] == ["ann1", "ann2"] and entry["reviewer"] == "rev"
    assert provenance["protocol"]["id"] == "abdominal-organs" and entry["consensus"]["summary"]["structures"] == 13

    # tokens never reach the log
    log = queue.server.log_text()
    for token in (queue.admin_token, ann1.token, ann2.token, rev.token):
        assert token not in log

    # the audit chain verifies, and a row edited in the database breaks it at that row
    events = admin.ok(admin.get(f"{base}/audit", params={"limit": 1000}))
    actions = [event["action"] for event in events]
    for action in ("project.create", "case.create", "task.claim", "submission.create", "consensus.create",
                   "review.return", "review.approve", "export.create"):  # fmt: skip
        assert action in actions
    assert admin.ok(admin.get("/api/v1/audit/verify"))["ok"] is True
    verified = admin_command("verify-audit", data_dir=queue.data_dir, database_url=queue.database_url)
    assert verified.returncode == 0, verified.stderr
    _edit_audit_row(queue, 7)
    broken = admin_command("verify-audit", data_dir=queue.data_dir, database_url=queue.database_url)
    assert broken.returncode == 1 and "audit row 7: modified" in broken.stderr
    assert admin.ok(admin.get("/api/v1/audit/verify"))["bad_row"] == 7
