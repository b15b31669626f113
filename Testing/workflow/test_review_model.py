"""The review panel's model against the real server: a reader of the case sees nothing of the others' work
before approval (blinded, nothing enters their scene) and the final after it; a reviewer who reads anonymously
sees "Reader 1" and "Reader 2" only, returns the case to one of them with a comment (the reader's next task
brings it back with the comment), then approves a final with an edited structure."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from MedAnnotAssistLib.core.labelio import read_reader
from MedAnnotAssistLib.mrml.protocol_segments import structureSegments
from MedAnnotAssistLib.mrml.scene import nodeIds
from MedAnnotAssistLib.mrml.segmentation import segmentMasks, setSegmentMask
from Testing.task_case import chest_protocol

from .conftest import TIMEOUT_S, make_ready, open_case

pytestmark = pytest.mark.slow


def submit(desk, liver_edit=None) -> None:
    session = open_case(desk)
    if liver_edit is not None:
        session.setMask("liver", liver_edit(session.mask("liver")))
    make_ready(desk)
    assert desk.task.submit()
    desk.wait_until(lambda: desk.task.current is None, TIMEOUT_S)


def claim_review(desk) -> None:
    task, review = desk.task, desk.review

    def claimed() -> bool:
        if task.current is None and task.state.actions["next_task"].enabled:
            task.next_task()
        return review.state.stage == "ready" and task.current is not None

    desk.wait_until(claimed, TIMEOUT_S)


def test_blinded_anonymous_return_and_an_edited_final(study, tmp_path):
    a, b = study.desk(study.a), study.desk(study.b)
    submit(a, lambda liver: ndimage.binary_erosion(liver))
    submit(b, lambda liver: ndimage.binary_dilation(liver))

    # A reads the case: before approval the review view stays blind and nothing enters A's scene
    before = nodeIds(a.context.scene)
    a.review.open_case(a.task.client, study.project_id, a.task.protocol, study.case_id)
    a.wait_until(lambda: a.review.state.stage == "blinded", TIMEOUT_S)
    state = a.review.state
    assert "only after the case is approved" in state.blinded_text and state.readers == () and state.rows == ()
    assert nodeIds(a.context.scene) == before and not state.actions["approve"].enabled

    # the reviewer reads anonymously: labels only, in submission order
    reviewer = study.desk(study.reviewer, anonymous_readers=True)
    review = reviewer.review
    claim_review(reviewer)
    state = review.state
    assert [(r.name, r.label) for r in state.readers] == [("Reader 1", "Reader 1"), ("Reader 2", "Reader 2")]
    shown = repr(state)
    assert study.a.name not in shown and study.b.name not in shown
    names = [reviewer.context.scene.GetNthNode(i).GetName() for i in range(reviewer.context.scene.GetNumberOfNodes())]
    assert "Reader 2" in names and not [n for n in names if study.a.name in n or study.b.name in n]
    assert review.show_reader("Reader 2") and review.state.readers[1].visible
    assert not review.show_reader(study.b.name) and "is not a reader of this case" in review.message
    assert review.take_reader("liver", "Reader 2") and review.state.row("liver").decision_text == "Reader 2"
    assert review.decision()["structures"] == {"liver": {"action": "take_reader", "reader": study.b.name}}
    assert not review.take_reader("liver", study.a.name + "x") and "is not a reader of this case" in review.message
    assert not review.return_to_readers({"Reader 2": " "}) and "needs a comment" in review.message
    assert review.return_to_readers({"Reader 2": "liver: follow the capsule, not the fat around it"})
    reviewer.wait_until(lambda: reviewer.task.current is None, TIMEOUT_S)
    assert review.state.stage == "decided" and reviewer.task.message.endswith("returned to Reader 2")

    # B's next task is the returned case, with the comment
    session = open_case(b)
    assert b.task.state.task.comment == "liver: follow the capsule, not the fat around it"
    assert b.task.state.task.round == 2 and session.task_info["round"] == 2
    make_ready(b)
    assert b.task.submit()
    b.wait_until(lambda: b.task.current is None, TIMEOUT_S)

    # round 2: the reviewer edits the liver of the consensus and approves with the reasons the final needs
    claim_review(reviewer)
    assert review.state.round == 2
    assert review.edit("liver")
    edited = review.review.editedNode
    segment = structureSegments(edited, review.protocol)["liver"]
    liver = segmentMasks(edited, [segment])[0][segment]
    trimmed = liver.copy()
    trimmed[: liver.shape[0] // 2] = False  # the reviewer erases the upper half, as the Segment Editor would
    setSegmentMask(edited, segment, trimmed)
    review.check_final()  # at once (the model also re-checks on its next poll after a stroke on the edited copy)
    reviewer.wait_until(lambda: not review.state.checking, TIMEOUT_S)
    assert review.state.row("liver").decision == "edited"
    approve = review.state.actions["approve"]
    assert not approve.enabled and "Left lung: required structure is empty (no reason given)" in approve.reason
    for structure_id in ("lung_left", "lung_right"):
        assert review.override(structure_id, None, "the readers were asked for the liver only")
    assert review.state.actions["approve"].enabled
    assert review.approve()
    reviewer.wait_until(lambda: reviewer.task.current is None, TIMEOUT_S)
    final_path = tmp_path / "final.seg.nrrd"
    final_path.write_bytes(study.admin.get(f"/api/v1/projects/{study.project_id}/cases/{study.case_id}/final").content)
    assert np.array_equal(read_reader(final_path, chest_protocol()).mask("liver"), trimmed)

    # after approval A sees everything, read only
    a.review.open_case(a.task.client, study.project_id, a.task.protocol, study.case_id)
    a.wait_until(lambda: a.review.state.stage == "ready", TIMEOUT_S)
    assert a.review.final_node is not None and len(a.review.state.readers) == 2
    assert a.review.state.actions["approve"].reason == "no review task in hand"
    assert a.export.state.what.endswith(": the approved final")
    a.review.close()
    assert nodeIds(a.context.scene) == before
