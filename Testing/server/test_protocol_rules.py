"""The protocol's blocking rules are enforced on the server, with overrides that carry a reason: refused with
every failure listed, stored, audited, shown to the reviewer, counted in progress; the reviewer's approved
final passes the rules too. Real readers: TotalSegmentator's masks of the sample CT (cropped to 30 slices,
so its pancreas is cut into pieces and too small)."""

from __future__ import annotations

import numpy as np
import pytest

from .harness import SAMPLE_OVERRIDES, unique, wait_for_consensus

PANCREAS = [  # 644 voxels of 3 x 3 x 3 mm
    {"structure": "pancreas", "name": "Pancreas", "rule": "volumeMl", "measured": pytest.approx(644 * 0.027),
     "expected": "20-200 ml", "message": "Pancreas: volume 17.4 ml, expected 20-200 ml"},
    {"structure": "pancreas", "name": "Pancreas", "rule": "maxComponents", "measured": 3, "expected": "at most 1",
     "message": "Pancreas: 3 connected component(s), at most 1 allowed"},
]  # fmt: skip
PANCREAS_REASON = SAMPLE_OVERRIDES[0]["reason"]


def _seg_nrrd(path, sample_dir, protocol_id: str, structures: dict[str, np.ndarray]):
    """A one-layer .seg.nrrd on the sample CT's grid with the given masks (structure id -> mask)."""
    import SimpleITK as sitk

    from MedAnnotAssistLib.core.labelio import Geometry, write_seg_nrrd
    from MedAnnotAssistLib.core.protocol import bundled_protocol

    protocol = bundled_protocol(protocol_id)
    image = sitk.ReadImage(str(sample_dir / "example_seg.nii.gz"))
    labels, segments = np.zeros(image.GetSize()[::-1], np.uint8), []
    for value, (structure_id, mask) in enumerate(structures.items(), start=1):
        labels[mask] = value
        segments.append((value, protocol.structure(structure_id)))
    return write_seg_nrrd(path, labels, Geometry.of(image), segments, protocol)


@pytest.fixture(scope="module")
def study(queue, sample_dir):
    """Two readers and a reviewer on an abdominal-organs project with the sample CT as its one case."""
    admin = queue.admin
    ann1, ann2, rev = (admin.new_user(unique(name)) for name in ("ann1", "ann2", "rev"))
    project = admin.new_project(unique("rules"), "abdominal-organs", readers=2, review=True)
    admin.set_roles(project, ann1.name, "annotator")
    admin.set_roles(project, ann2.name, "annotator")
    admin.set_roles(project, rev.name, "reviewer")
    case = admin.upload_case(project, sample_dir / "example_ct_sm.nii.gz", "sample")
    return project, case["id"], ann1, ann2, rev


def _refused(response, code: str) -> dict:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == code, body
    return body


def test_a_submission_failing_blocking_rules_is_refused_until_overridden(queue, study, reader_files, tmp_path):
    project, case_id, ann1, ann2, rev = study
    base = f"/api/v1/projects/{project}"
    task = ann1.claim(project)

    # refused: each failure with structure, rule, measured value, what passes and the message
    body = _refused(ann1.submit(project, task, reader_files[0], {"time_spent_s": 600.0}), "protocol_rules_failed")
    assert body["failures"] == PANCREAS
    assert "example_seg.seg.nrrd fails 2 blocking rule(s) of protocol abdominal-organs@" in body["message"]
    assert "Pancreas: volume 17.4 ml, expected 20-200 ml; Pancreas: 3 connected component(s)" in body["message"]
    assert "metadata.overrides" in body["message"]
    # an override of one rule leaves the other failing
    one_rule = {"time_spent_s": 600.0, "overrides": [{"structure": "pancreas", "rule": "volumeMl", "reason": "cut"}]}
    body = _refused(ann1.submit(project, task, reader_files[0], one_rule), "protocol_rules_failed")
    assert [f["rule"] for f in body["failures"]] == ["maxComponents"]
    # overrides must name a structure of the protocol and a known rule, with a reason
    for overrides, words in [
        ([{"structure": "pancreas", "reason": "   "}], "overrides.0.reason"),
        ([{"structure": "pancreas"}], "overrides.0.reason"),
        ([{"structure": "pancreas", "rule": "volume", "reason": "cut"}], "overrides.0.rule"),
        ([{"structure": "pancreas", "reason": "cut", "by": "me"}], "overrides.0.by"),
        ([{"structure": "pankreas", "reason": "cut"}], "pankreas"),
    ]:
        body = _refused(
            ann1.submit(project, task, reader_files[0], {"time_spent_s": 1.0, "overrides": overrides}),
            "invalid_metadata",
        )
        assert words in body["message"], body
    # nothing was stored by the refusals
    assert ann1.ok(ann1.get(f"{base}/cases/{case_id}/submissions")) == []

    # accepted with a reason for the structure; the override of a rule that passes is not kept
    overrides = [
        {"structure": "pancreas", "reason": PANCREAS_REASON},
        {"structure": "liver", "rule": "volumeMl", "reason": "not needed: the liver passes"},
    ]
    accepted = ann1.submit(project, task, reader_files[0], {"time_spent_s": 600.0, "overrides": overrides})
    assert accepted.status_code == 201, accepted.text
    kept = [{**failure, "reason": PANCREAS_REASON} for failure in PANCREAS]
    assert accepted.json()["overrides"] == kept
    mine = ann1.ok(ann1.get(f"{base}/cases/{case_id}/submissions"))
    assert mine[0]["overrides"] == kept and mine[0]["metadata"]["overrides"] == overrides

    # the second reader: the fast model's right kidney has a stray island too
    task2 = ann2.claim(project)
    body = _refused(ann2.submit(project, task2, reader_files[1], {"time_spent_s": 1.0}), "protocol_rules_failed")
    assert [(f["structure"], f["rule"]) for f in body["failures"]] == [
        ("kidney_right", "maxComponents"),
        ("pancreas", "volumeMl"),
        ("pancreas", "maxComponents"),
    ]
    second = ann2.submit(project, task2, reader_files[1], {"time_spent_s": 300.0, "overrides": SAMPLE_OVERRIDES})
    assert second.status_code == 201, second.text
    assert [(o["structure"], o["rule"]) for o in second.json()["overrides"]] == [
        ("kidney_right", "maxComponents"),
        ("pancreas", "volumeMl"),
        ("pancreas", "maxComponents"),
    ]

    # the reviewer sees each reader's overrides with the submissions and the consensus (once its job ran)
    wait_for_consensus(rev, project, case_id)
    seen = {s["reader"]: s["overrides"] for s in rev.ok(rev.get(f"{base}/cases/{case_id}/submissions"))}
    assert seen[ann1.name] == kept and len(seen[ann2.name]) == 3
    consensus = rev.ok(rev.get(f"{base}/cases/{case_id}/consensus"))
    assert consensus["overrides"][ann1.name] == kept
    assert consensus["overrides"][ann2.name][0]["reason"] == SAMPLE_OVERRIDES[1]["reason"]

    # the approved final passes the rules too, or carries the reviewer's own overrides
    review = rev.claim(project)
    approve = {"lease_id": review["lease_id"], "decision": "approve"}
    body = _refused(rev.post(f"{base}/tasks/{review['id']}/review", json=approve), "protocol_rules_failed")
    assert {f["structure"] for f in body["failures"]} == {"pancreas"}
    assert "the approved final segmentation fails" in body["message"] and "overrides" in body["message"]
    assert rev.ok(rev.get(f"{base}/cases/{case_id}"))["state"] == "review"
    approve["overrides"] = [{"structure": "pancreas", "reason": "as the readers: the CT is cropped"}]
    approved = rev.ok(rev.post(f"{base}/tasks/{review['id']}/review", json=approve))
    assert approved["case_state"] == "approved"
    assert {o["rule"] for o in approved["overrides"]} == {f["rule"] for f in body["failures"]}

    # counted in progress, and in the audit trail
    progress = rev.ok(rev.get(f"{base}/progress"))
    readers = {r["reader"]: r for r in progress["readers"]}
    assert readers[ann1.name]["overrides"] == 2 and readers[ann2.name]["overrides"] == 3
    assert progress["overrides"]["submissions"] == {
        "total": 5,
        "by_structure": {"pancreas": 4, "kidney_right": 1},
        "by_rule": {"volumeMl": 2, "maxComponents": 3},
    }
    assert progress["overrides"]["reviews"]["total"] == len(approved["overrides"])
    events = queue.admin.ok(queue.admin.get(f"{base}/audit", params={"limit": 1000}))
    submitted = [e for e in events if e["action"] == "submission.create"]
    assert [len(e["after"]["overrides"]) for e in submitted] == [2, 3]
    assert next(e for e in events if e["action"] == "review.approve")["after"]["overrides"] == approved["overrides"]


def test_required_structure_empty_and_declared_absent(queue, sample_dir, tmp_path):
    """An empty required structure is refused; an optional one declared absent in the metadata (as the Slicer
    client sends it) must be empty."""
    import SimpleITK as sitk

    from Testing.readers import ABDOMEN_LABELS

    admin = queue.admin
    reader = admin.new_user(unique("reader"))
    project = admin.new_project(unique("required"), "abdominal-organs", readers=1, review=False)
    admin.set_roles(project, reader.name, "annotator")
    admin.upload_case(project, sample_dir / "example_ct_sm.nii.gz", "sample")
    values = sitk.GetArrayFromImage(sitk.ReadImage(str(sample_dir / "example_seg.nii.gz")))
    masks = {sid: values == value for value, sid in ABDOMEN_LABELS.items() if sid != "spleen"}
    path = _seg_nrrd(tmp_path / "no-spleen.seg.nrrd", sample_dir, "abdominal-organs", masks)
    task = reader.claim(project)
    metadata = {"time_spent_s": 1.0, "segments": {"gallbladder": {"state": "absent"}}, "overrides": SAMPLE_OVERRIDES}
    body = _refused(reader.submit(project, task, path, metadata), "protocol_rules_failed")
    assert [(f["structure"], f["rule"], f["measured"], f["expected"]) for f in body["failures"]] == [
        ("spleen", "required", 0, "drawn"),
        ("gallbladder", "absent", int(np.count_nonzero(values == 4)), "0 voxels"),
    ]
    assert "Spleen: required structure is empty" in body["message"]
    assert "Gallbladder: declared absent but" in body["message"]
    metadata["overrides"] = [*SAMPLE_OVERRIDES, {"structure": "spleen", "reason": "splenectomy"}]
    metadata["segments"] = {}
    accepted = reader.submit(project, task, path, metadata)
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["overrides"][0] | {"reason": ""} == {
        "structure": "spleen", "name": "Spleen", "rule": "required", "measured": 0, "expected": "drawn",
        "message": "Spleen: required structure is empty", "reason": "",
    }  # fmt: skip


def test_a_lesion_outside_its_organ_is_refused(queue, sample_dir, tmp_path):
    """liver-lesion: a lesion drawn on the right kidney lies outside the liver (rule ``inside``)."""
    import SimpleITK as sitk

    admin = queue.admin
    reader = admin.new_user(unique("reader"))
    project = admin.new_project(unique("lesion"), "liver-lesion", readers=1, review=False)
    admin.set_roles(project, reader.name, "annotator")
    admin.upload_case(project, sample_dir / "example_ct_sm.nii.gz", "sample")
    values = sitk.GetArrayFromImage(sitk.ReadImage(str(sample_dir / "example_seg.nii.gz")))
    path = _seg_nrrd(
        tmp_path / "lesion.seg.nrrd", sample_dir, "liver-lesion", {"liver": values == 5, "liver_lesion": values == 2}
    )
    task = reader.claim(project)
    body = _refused(reader.submit(project, task, path, {"time_spent_s": 1.0}), "protocol_rules_failed")
    assert body["failures"] == [
        {"structure": "liver_lesion", "name": "Liver lesion", "rule": "inside", "measured": 0.0,
         "expected": "at least 90% inside Liver", "message": "Liver lesion: 0.0% inside Liver, at least 90% required"}
    ]  # fmt: skip
    overrides = [{"structure": "liver_lesion", "rule": "inside", "reason": "exophytic lesion"}]
    accepted = reader.submit(project, task, path, {"time_spent_s": 1.0, "overrides": overrides})
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["overrides"][0]["reason"] == "exophytic lesion"


def test_the_reviewers_final_must_pass_the_rules(queue, sample_dir, reader_files, tmp_path):
    """Approving a final that fails a blocking rule is refused; the reviewer's edited pancreas that passes is
    approved without any override."""
    import SimpleITK as sitk
    from scipy import ndimage

    admin = queue.admin
    reader, rev = admin.new_user(unique("reader")), admin.new_user(unique("rev"))
    project = admin.new_project(unique("final"), "abdominal-organs", readers=1, review=True)
    admin.set_roles(project, reader.name, "annotator")
    admin.set_roles(project, rev.name, "reviewer")
    case = admin.upload_case(project, sample_dir / "example_ct_sm.nii.gz", "sample")
    base = f"/api/v1/projects/{project}"
    metadata = {"time_spent_s": 1.0, "overrides": SAMPLE_OVERRIDES}
    assert reader.submit(project, reader.claim(project), reader_files[0], metadata).status_code == 201

    review = rev.claim(project)
    approve = {"lease_id": review["lease_id"], "decision": "approve"}
    body = _refused(rev.post(f"{base}/tasks/{review['id']}/review", json=approve), "protocol_rules_failed")
    assert body["failures"] == PANCREAS
    assert rev.ok(rev.get(f"{base}/cases/{case['id']}"))["state"] == "review"

    pancreas = sitk.GetArrayFromImage(sitk.ReadImage(str(sample_dir / "example_seg.nii.gz"))) == 7
    # the reviewer keeps the pancreas's largest piece and grows it by a voxel: one component of 32.2 ml
    pieces, _count = ndimage.label(pancreas, np.ones((3, 3, 3), bool))
    largest = pieces == 1 + np.bincount(pieces.ravel())[1:].argmax()
    pancreas = ndimage.binary_dilation(largest, np.ones((3, 3, 3), bool))
    edited = _seg_nrrd(tmp_path / "edited.seg.nrrd", sample_dir, "abdominal-organs", {"pancreas": pancreas})
    with open(edited, "rb") as handle:
        files = {"segmentation": ("edited.seg.nrrd", handle)}
        uploaded = rev.post(f"{base}/tasks/{review['id']}/review/edited", files=files, data=approve)
    assert uploaded.status_code == 201, uploaded.text
    approve["structures"] = {"pancreas": {"action": "edited"}}
    approved = rev.ok(rev.post(f"{base}/tasks/{review['id']}/review", json=approve))
    assert approved["case_state"] == "approved" and approved["overrides"] == []
