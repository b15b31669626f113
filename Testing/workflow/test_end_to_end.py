"""A whole reading study through the workflow models, headless on slicer-core, against the real server: two
annotators claim the real sample CT, run the CT engine, accept the lungs, refine the liver with a real mask
edit, answer Lung-RADS and submit through the protocol gate; the reviewer sees both readers, the consensus
and the agreement table, takes the consensus of the left lung and B's liver, gives the reasons the final
needs and approves. The approved final and the project's export hold exactly those choices; the submissions
hold the time spent and the AI history; no HTTP call and no engine run happened on the caller's thread."""

from __future__ import annotations

import io
import threading
import zipfile

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from MedAnnotAssistLib.core.engines.ct import CTEngine
from MedAnnotAssistLib.core.labelio import read_reader
from MedAnnotAssistLib.core.queue_client import QueueClient
from MedAnnotAssistLib.mrml.segmentation import setSegmentMask
from MedAnnotAssistLib.workflow.events import Action
from Testing.task_case import chest_protocol

from .conftest import LUNG_REASON, TIMEOUT_S, Study

pytestmark = pytest.mark.slow


@pytest.fixture
def threads(monkeypatch):
    """The names of the threads that made HTTP calls and ran the engine."""
    seen = {"http": set(), "engine": set()}

    def recorder(kind: str, original):
        def recording(*args, **kwargs):
            seen[kind].add(threading.current_thread().name)
            return original(*args, **kwargs)

        return recording

    monkeypatch.setattr(QueueClient, "_send", recorder("http", QueueClient._send))
    monkeypatch.setattr(CTEngine, "run", recorder("engine", CTEngine.run))
    return seen


def annotate(study: Study, who, liver_edit, lung_rads: str) -> np.ndarray:
    """One reader's case through the panels; the liver mask they submitted."""
    desk = study.desk(who)
    task, protocol, ai, questions = desk.task, desk.protocol, desk.ai, desk.questions
    assert task.state.actions["next_task"].enabled
    assert task.next_task()
    desk.wait_until(lambda: task.session is not None, TIMEOUT_S)
    session = task.session
    assert task.state.task.case_id == study.case_id and task.state.lease.state == "held"
    assert 0 < task.state.lease.seconds_left <= 300

    rows = {row.structure_id: row for row in protocol.state.rows}
    assert [r.structure_id for r in protocol.state.rows] == ["lung_left", "lung_right", "nodule", "liver"]
    assert rows["liver"].state == "suggested" and rows["liver"].ai == "AI: totalsegmentator 2.18.0, 93%"
    assert rows["lung_left"].state == "empty" and rows["lung_left"].ai is None
    assert rows["lung_left"].color.startswith("#") and rows["lung_left"].required
    assert rows["lung_left"].actions["accept"] == Action(False, "no AI proposal")
    submit = task.state.actions["submit"]
    assert not submit.enabled and "Left lung: required structure is empty" in submit.reason
    assert "question 'lung_rads' is not answered" in submit.reason

    # the CT engine, chosen from the registry, proposes both lungs in a job
    desk.wait_until(lambda: ai.state.engine == "ct" and ai.state.targets, TIMEOUT_S)
    assert {t.structure_id for t in ai.state.targets} == {"lung_left", "lung_right"}
    assert ai.choose_structures(["lung_left", "lung_right"])
    assert ai.run()
    assert ai.state.progress is not None and not ai.state.actions["run"].enabled
    desk.wait_until(lambda: ai.state.progress is None, TIMEOUT_S)
    assert ai.state.last_run.startswith("ct ") and "Left lung, Right lung" in ai.state.last_run
    assert protocol.state.row("lung_left").state == "suggested"

    # the keyboard's path: select, accept, next, accept
    keys = desk.shortcuts()
    assert protocol.select("lung_left")
    keys["accept"].call()
    keys["next_structure"].call()
    assert protocol.state.selected == "lung_right" and keys["accept"].action().enabled
    keys["accept"].call()
    assert protocol.state.row("lung_left").state == protocol.state.row("lung_right").state == "accepted"

    # the liver: a real edit of the scene's segment, as the Segment Editor makes it
    assert protocol.select("liver")
    edited = liver_edit(session.mask("liver"))
    setSegmentMask(session.segmentationNode, session.segmentId("liver"), edited)
    assert protocol.state.row("liver").state == "refined"
    assert protocol.declare_absent("nodule")
    assert questions.answer("lung_rads", lung_rads)
    assert questions.state.unanswered == ()
    desk.wait_until(lambda: not protocol.state.checking, TIMEOUT_S)

    # the lung bases are below the protocol's lung volume: Submit waits for a reason for each
    submit = task.state.actions["submit"]
    assert not submit.enabled and "Left lung: volume" in submit.reason and "(no override reason)" in submit.reason
    blocking = [(row.structure_id, rule.rule) for row in protocol.state.rows for rule in row.blocking]
    assert blocking == [("lung_left", "volumeMl"), ("lung_right", "volumeMl")]
    for structure_id, rule in blocking:
        assert protocol.override(structure_id, rule, LUNG_REASON)
    assert task.state.actions["submit"].enabled
    assert task.state.times.case_s >= 0 and not task.state.times.paused

    assert keys["submit"].call()
    desk.wait_until(lambda: task.current is None, TIMEOUT_S)
    assert "submitted (submission" in task.message and task.state.outbox.pending == 0
    assert protocol.state.rows == () and not keys["accept"].action().enabled
    return edited


def test_a_reading_study_through_the_panels(study, sample_dir, threads, tmp_path):
    a_liver = annotate(study, study.a, lambda liver: ndimage.binary_erosion(liver, iterations=2), "2")
    fast = sitk.GetArrayFromImage(sitk.ReadImage(str(sample_dir / "example_seg_fast.nii.gz"))) == 5
    b_liver = annotate(study, study.b, lambda liver: fast, "3")  # B redraws it as the other real reader did
    assert not np.array_equal(a_liver, b_liver)

    # the reviewer claims the review task once the server's consensus is done
    desk = study.desk(study.reviewer)
    task, review = desk.task, desk.review

    def claimed() -> bool:
        if task.current is None and task.state.actions["next_task"].enabled:
            task.next_task()
        return review.state.stage == "ready"

    desk.wait_until(claimed, TIMEOUT_S)
    state = review.state
    assert task.state.task.kind == "review" and state.case_id == study.case_id
    assert sorted(r.name for r in state.readers) == sorted([study.a.name, study.b.name])
    assert all(r.time_spent_s is not None and r.time_spent_s >= 0 for r in state.readers)
    assert all(any("lung_left volumeMl: " + LUNG_REASON in o for o in r.overrides) for r in state.readers)
    table = {row.structure_id: row for row in state.rows}
    assert set(table) == {"lung_left", "lung_right", "nodule", "liver"}
    assert table["lung_left"].dice == 1.0 and table["lung_left"].verdict == "agreed"  # the same engine's lungs
    assert 0.5 < table["liver"].dice < 1.0 and table["liver"].hd95_mm > 0
    assert table["liver"].decision == "consensus" and table["liver"].decision_text == "the consensus"
    assert state.disagreement_in_slices and state.disagreement_in_3d and state.consensus_visible
    scene_nodes = review.review
    assert scene_nodes.disagreementNode.GetDisplayNode().GetColorNodeID() == "vtkMRMLColorTableNodeWarm1"
    rendering = desk.context.volumeRenderingLogic
    for node in (scene_nodes.disagreementNode, scene_nodes.imageNode):  # the map over the CT, in 3D
        assert rendering.GetFirstVolumeRenderingDisplayNode(node).GetVisibility()
    assert rendering.GetFirstVolumeRenderingDisplayNode(scene_nodes.imageNode).GetVolumePropertyNode().GetName() == (
        "CT-Lung"
    )  # the lung-nodule protocol's preset
    assert review.show_reader(study.b.name, True) and review.state.readers[0].visible != review.state.readers[1].visible
    assert review.show_reader(study.b.name, False) and not any(r.visible for r in review.state.readers)

    # decisions: the consensus for the left lung, B's liver; the final needs the lungs' reasons
    assert review.take_consensus("lung_left")
    assert review.take_reader("liver", study.b.name)
    desk.wait_until(lambda: not review.state.checking, TIMEOUT_S)
    approve = review.state.actions["approve"]
    assert not approve.enabled and "Left lung: volume" in approve.reason
    assert review.state.row("liver").decision_text == study.b.name
    for structure_id in ("lung_left", "lung_right"):
        assert review.override(structure_id, "volumeMl", LUNG_REASON)
    assert review.state.actions["approve"].enabled
    assert review.decision()["structures"] == {"liver": {"action": "take_reader", "reader": study.b.name}}
    assert review.approve()
    desk.wait_until(lambda: task.current is None, TIMEOUT_S)
    assert review.state.stage == "decided" and "approved" in task.message

    # the server: one submission per reader with time and AI history; the final holds the decisions
    admin, pid, cid = study.admin, study.project_id, study.case_id
    submissions = admin.ok(admin.get(f"/api/v1/projects/{pid}/cases/{cid}/submissions"))
    assert sorted(s["reader"] for s in submissions) == sorted([study.a.name, study.b.name])
    for item in submissions:
        metadata = item["metadata"]
        assert metadata["time_spent_s"] >= 0 and "liver" in metadata["timing"]["structures"]
        liver = metadata["segments"]["liver"]
        assert [e["event"] for e in liver["history"]] == ["proposed", "edited", "final"]
        assert liver["history"][0]["engine"] == "totalsegmentator" and liver["state"] == "refined"
        assert liver["ai_vs_final"]["dice"] < 1.0
        lung = metadata["segments"]["lung_left"]
        assert [e["event"] for e in lung["history"]] == ["proposed", "accepted", "override", "final"]
        assert lung["history"][0]["engine"] == "ct" and metadata["answers"]["lung_rads"] in ("2", "3")
        assert [s["source"] for s in metadata["ai"]] == ["file", "engine"]
    files = {}
    for name, path in (("final", f"/cases/{cid}/final"), ("consensus", f"/cases/{cid}/consensus/consensus")):
        files[name] = tmp_path / f"{name}.seg.nrrd"
        files[name].write_bytes(admin.get(f"/api/v1/projects/{pid}{path}").content)
    protocol = chest_protocol()
    final, consensus = read_reader(files["final"], protocol), read_reader(files["consensus"], protocol)
    assert np.array_equal(final.mask("liver"), b_liver)
    assert np.array_equal(final.mask("lung_left"), consensus.mask("lung_left"))
    assert np.array_equal(final.mask("lung_right"), consensus.mask("lung_right"))

    export = admin.ok(admin.post(f"/api/v1/projects/{pid}/exports", json={"format": "nnunet"}), 201)
    archive = zipfile.ZipFile(io.BytesIO(admin.get(export["download"]).content))
    label_name = next(n for n in archive.namelist() if "/labelsTr/" in n)
    (tmp_path / "label.nii.gz").write_bytes(archive.read(label_name))
    exported = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "label.nii.gz")))
    values = {s.id: value for value, s in enumerate(protocol.structures, start=1)}
    assert np.array_equal(exported == values["liver"], b_liver)
    assert np.array_equal(exported == values["lung_left"], consensus.mask("lung_left") & ~b_liver)

    # every server call and the engine ran in the models' jobs, never on the caller's (GUI) thread
    main = threading.main_thread().name
    assert threads["http"] and main not in threads["http"], threads
    assert threads["engine"] and main not in threads["engine"], threads
