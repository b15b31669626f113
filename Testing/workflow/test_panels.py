"""The protocol, questions and AI panels' models on a task session of the real sample CT (headless, no server):
rows, row actions and the reasons they are off, selection, the rules running again after an edit, the Submit
gate with overrides and the required question, the engines of the registry, Run with Cancel, and the
confirmation before a run replaces the reader's work."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from MedAnnotAssistLib.core.activity import ManualClock
from MedAnnotAssistLib.mrml.segmentation import setSegmentMask
from MedAnnotAssistLib.mrml.task_session import TaskSession
from MedAnnotAssistLib.workflow.ai import AIModel
from MedAnnotAssistLib.workflow.background import Background
from MedAnnotAssistLib.workflow.events import Action, wait_until
from MedAnnotAssistLib.workflow.protocol import ProtocolModel
from MedAnnotAssistLib.workflow.questions import QuestionsModel

REASON = "30 slices: only the lung bases are in this scan"


@pytest.fixture
def case(context, sample_dir, protocol, ai_liver):
    clock = ManualClock(50.0)
    session = TaskSession.open(context, protocol, sample_dir / "example_ct_sm.nii.gz", ai_liver[0], clock=clock)
    yield session, clock
    session.close()


@pytest.fixture
def background():
    made = Background()
    yield made
    made.shutdown()


def test_protocol_rows_selection_and_the_gate(case):
    session, clock = case
    model, questions = ProtocolModel(clock), QuestionsModel()
    events = []
    model.subscribe(events.append)
    model.bind(session)
    questions.bind(session)
    state = model.state
    assert (state.protocol, state.title) == ("chest-screening-test@1.1.0", "Lungs and liver (test)")
    left, nodule, liver = state.row("lung_left"), state.row("nodule"), state.row("liver")
    assert (left.name, left.color, left.required, left.state, left.ai) == ("Left lung", "#d1b3a1", True, "empty", None)
    assert left.instructions.startswith("Left lung parenchyma including intrapulmonary vessels")
    assert [(r.rule, r.passed, r.blocks) for r in left.rules] == [("required", False, True)]
    assert liver.ai == "AI: totalsegmentator 2.18.0, 93%" and liver.state == "suggested"
    assert liver.voxels == int(session.mask("liver").sum()) and liver.volume_ml > 1000
    assert left.actions["accept"] == Action(False, "no AI proposal") and left.actions["absent"] == Action(
        False, "required"
    )
    assert nodule.actions["absent"].enabled and liver.actions["accept"].enabled
    assert liver.actions["revert"] == Action(False, "the AI's proposal is shown")

    # selecting a row selects its segment; the keyboard's next and previous wrap around the protocol
    assert model.select("liver")
    assert events[-1].name == "selected" and events[-1].payload == {
        "structure_id": "liver",
        "segment_id": session.segmentId("liver"),
    }
    assert model.next_structure() and model.state.selected == "lung_left"
    assert model.previous_structure() and model.state.selected == "liver"
    assert not model.accept("lung_left") and model.message == "accept: Left lung: no AI proposal"
    assert model.reject() and model.state.row("liver").state == "rejected"
    assert model.accept() and model.state.row("liver").state == "accepted"

    # an edit: the rules run again after the strokes stop (recheck_after_s on the model's clock)
    proposal = session.mask("liver")
    setSegmentMask(session.segmentationNode, session.segmentId("liver"), ndimage.binary_erosion(proposal))
    assert model.state.checking and model.state.row("liver").state == "refined"
    assert model.state.row("liver").voxels == int(proposal.sum())  # not yet
    model.poll()
    assert model.state.checking
    clock.advance(0.5)
    model.poll()
    assert not model.state.checking
    assert model.state.row("liver").voxels == int(ndimage.binary_erosion(proposal).sum())
    assert model.state.row("liver").actions["accept"].reason == "edited after the AI's proposal: revert first"

    # the gate: the empty lungs, then the question
    assert model.state.gate == Action(False, "; ".join(model.state.problems))
    assert model.state.problems[0] == "Left lung: required structure is empty (no override reason)"
    assert "question 'lung_rads' is not answered" in model.state.problems
    assert questions.state.gate == Action(False, "answer: Lung-RADS category of this scan")
    for structure_id in ("lung_left", "lung_right"):
        assert model.override(structure_id, "required", REASON)
    assert model.state.row("lung_left").rules[0].override == REASON
    assert model.state.problems == ("question 'lung_rads' is not answered",)
    assert not questions.answer("lung_rads", "5")
    assert questions.message == "answer to 'lung_rads': expected one of 1, 2, 3, 4A, 4B, 4X, got '5'"
    assert questions.answer("lung_rads", "4A") and questions.state.unanswered == ()
    assert [(q.question_id, q.required, q.answer) for q in questions.state.rows] == [
        ("lung_rads", True, "4A"),
        ("nodule_type", False, None),
    ]
    assert model.state.gate == Action(True) and questions.state.gate.enabled
    assert model.clear_override("lung_left", "required") and not model.state.gate.enabled
    assert not model.override("lung_left", "required", "  ") and "a reason is required" in model.message
    assert questions.answer("lung_rads", None) and questions.state.unanswered == ("lung_rads",)

    session.close()
    assert model.state.rows == () and model.state.gate == Action(False, "no case is open")
    assert questions.state.rows == () and not model.select("liver")


def test_engines_run_cancel_and_the_confirmation_before_replacing_work(case, background):
    session, _ = case
    ai = AIModel(background)
    ai.bind(session)

    def pump():
        background.poll()
        ai.poll()

    assert ai.state.actions["run"] == Action(False, "choose an engine")
    assert ai.refresh_engines()
    wait_until(pump, lambda: ai.state.engine == "ct" and ai.state.targets, 60)
    engines = {row.name: row for row in ai.state.engines}
    assert engines["ct"].usable and set(engines) == {"ct", "seeds", "onnx", "monai-label", "totalsegmentator"}
    assert not ai.choose_engine("totalsegmentator") and ai.message.startswith("engine totalsegmentator: ")
    assert "pip install TotalSegmentator" in ai.message and ai.state.engine == "ct"
    assert ai.choose_engine("onnx")  # usable here, but not without its model file: the job says so
    wait_until(pump, lambda: ai.message_is_error, 60)
    assert ai.state.actions["run"] == Action(False, "reading what the engine proposes") and "onnx" in ai.message.lower()
    assert ai.choose_engine("ct")
    wait_until(pump, lambda: ai.state.targets, 60)
    assert [t.structure_id for t in ai.state.targets] == ["lung_left", "lung_right"]
    assert not ai.choose_structures(["liver"]) and "cannot propose liver" in ai.message

    # Cancel: the job stops at the engine's next check and nothing changes in the scene
    before = {s.structure_id: s.state for s in session.structures}
    assert ai.run()
    assert ai.cancel()
    wait_until(pump, lambda: ai.state.progress is None, 60)
    assert ai.message == "cancelled: nothing was changed" and ai.state.last_run == ""
    assert {s.structure_id: s.state for s in session.structures} == before

    assert ai.run()
    wait_until(pump, lambda: ai.state.progress is None, 120)
    assert ai.state.last_run.startswith("ct ") and session.state("lung_left") == "suggested"
    session.accept("lung_left")
    lung = session.mask("lung_left")
    session.setMask("lung_right", np.zeros_like(lung))
    assert [t.reader_work for t in ai.state.targets] == [True, True]
    assert not ai.run()
    assert ai.state.confirm == "replace your work on Left lung, Right lung with the AI's proposal?"
    assert session.state("lung_left") == "accepted"  # nothing ran
    assert ai.run(confirmed=True) and ai.state.confirm == ""
    wait_until(pump, lambda: ai.state.progress is None, 120)
    assert session.state("lung_left") == session.state("lung_right") == "suggested"
    history = [e["event"] for e in session.structure("lung_left").history]
    assert history == ["proposed", "accepted", "proposed"]


def test_keep_with_a_reason_the_editors_selection_and_the_case_in_3d(case):
    session, _ = case
    model = ProtocolModel()
    model.bind(session)
    scene = session.context.scene

    # "keep with a reason" is offered where a rule blocks, and one reason covers every rule of the structure
    left, liver = model.state.row("lung_left"), model.state.row("liver")
    assert left.actions["override"].enabled and [r.rule for r in left.blocking] == ["required"]
    assert liver.actions["override"] == Action(False, "no rule blocks it")
    assert model.override("lung_left", None, REASON)
    left = model.state.row("lung_left")
    assert left.blocking == () and left.rules[0].override == REASON
    assert left.actions["override"] == Action(False, "no rule blocks it")
    assert not any("Left lung" in problem for problem in model.state.problems)

    # a segment chosen in the Segment Editor selects its structure's row (once)
    events = []
    model.subscribe(events.append)
    assert model.select_segment(session.segmentId("liver")) and model.state.selected == "liver"
    assert [e.payload for e in events if e.name == "selected"] == [
        {"structure_id": "liver", "segment_id": session.segmentId("liver")}
    ]
    assert not model.select_segment(session.segmentId("liver"))  # already selected: no event back to the editor
    assert not model.select_segment("not-a-segment") and model.state.selected == "liver"

    # the case image in 3-D with the protocol's preset (lung-nodule's CT-Lung); its nodes leave with the case
    before = {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}
    assert model.state.preset == "CT-Lung" and not model.state.in_3d
    assert model.show_volume_rendering(True) and model.state.in_3d
    rendering = session.context.volumeRenderingLogic.GetFirstVolumeRenderingDisplayNode(session.volumeNode)
    assert rendering.GetVisibility() and rendering.GetVolumePropertyNode().GetName() == "CT-Lung"
    assert model.show_volume_rendering(False) and not model.state.in_3d and not rendering.GetVisibility()
    made = {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())} - before
    assert made and model.state.actions["volume_rendering"].enabled
    session.close()
    left_over = made & {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}
    assert left_over == set() and not model.state.in_3d
    assert model.state.actions["volume_rendering"] == Action(False, "no case is open")
    assert not model.show_volume_rendering(True) and model.message == "3-D: no case is open"
