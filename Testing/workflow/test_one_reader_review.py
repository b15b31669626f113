"""The review model on a one-reader case against the real server: the server computes no consensus (the case
goes to review at the submit), so the reviewer gets the single reader's segmentation as the proposal: no
disagreement map, rows that say "one reader"; a look at the case waits while the reader works and loads once
the case is in review; the reviewer returns it with a comment, then approves an edited final with the reasons
the protocol's rules need; after approval the reader sees it, read only."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from MedAnnotAssistLib.core.labelio import read_reader
from MedAnnotAssistLib.mrml.protocol_segments import structureSegments
from MedAnnotAssistLib.mrml.segmentation import segmentMasks, setSegmentMask
from Testing.task_case import chest_protocol

from .conftest import TIMEOUT_S, make_ready, make_study, open_case
from .test_review_model import claim_review, submit

pytestmark = pytest.mark.slow


@pytest.fixture
def one_reader(queue, protocol, sample_dir, ai_liver, tmp_path):
    made = make_study(queue, protocol, sample_dir, ai_liver, tmp_path, readers=1)
    yield made
    made.close()


def mask_of(node, protocol, structure_id: str) -> np.ndarray:
    segment = structureSegments(node, protocol)[structure_id]
    return segmentMasks(node, [segment])[0][segment]


def test_a_one_reader_case_is_reviewed_from_the_readers_segmentation(one_reader, tmp_path):
    study = one_reader
    a, reviewer = study.desk(study.a), study.desk(study.reviewer)
    review = reviewer.review

    # the reviewer looks at the case while its reader works: waiting, and said so
    review.open_case(reviewer.task.client, study.project_id, reviewer.task.protocol, study.case_id)
    reviewer.wait_until(lambda: (review.case or {}).get("state") == "annotating", TIMEOUT_S)
    assert review.state.stage == "waiting" and not review.state.message_is_error
    assert review.message == "the readers are still working: waiting for their submissions"
    submit(a, lambda liver: ndimage.binary_erosion(liver))

    # the wait loop sees the case in review and loads the reader's segmentation as the proposal (read only)
    reviewer.wait_until(lambda: review.state.stage in ("ready", "none"), TIMEOUT_S)
    assert review.state.stage == "ready", review.message
    assert review.state.actions["approve"].reason == "no review task in hand"

    # the review task: one reader, their segmentation is the proposal; nothing to compare
    claim_review(reviewer)
    state = review.state
    assert [r.name for r in state.readers] == [study.a.name] and state.one_reader == study.a.name
    assert state.round == 1 and not state.message_is_error and "one reader" in state.message
    assert {row.verdict for row in state.rows} == {"one reader"}
    assert all(row.dice is None and row.hd95_mm is None for row in state.rows)
    assert state.row("liver").decision_text == f"the proposal ({study.a.name})"
    assert review.review.disagreementNode is None
    assert state.actions["show_disagreement"].reason == "one reader: no disagreement map"
    assert state.actions["show_consensus"].enabled and state.consensus_visible
    assert not state.disagreement_in_slices and not state.disagreement_in_3d
    reader_liver = mask_of(review.review.readerNodes[0], review.protocol, "liver")
    assert np.array_equal(mask_of(review.review.consensusNode, review.protocol, "liver"), reader_liver)
    assert reader_liver.any() and reviewer.export.state.what.endswith(": the reader's proposal")
    assert review.show_consensus(False) and not review.state.consensus_visible
    assert review.take_reader("liver", study.a.name) and review.state.row("liver").decision_text == study.a.name
    assert review.decision()["structures"] == {"liver": {"action": "take_reader", "reader": study.a.name}}
    assert review.take_consensus("liver") and review.decision()["structures"] == {}

    # return to the reader with a comment: their next task brings it back, round 2
    assert review.return_to_readers({study.a.name: "liver: include the caudate lobe"})
    reviewer.wait_until(lambda: reviewer.task.current is None, TIMEOUT_S)
    assert review.state.stage == "decided" and reviewer.task.message.endswith(f"returned to {study.a.name}")
    session = open_case(a)
    assert a.task.state.task.comment == "liver: include the caudate lobe" and a.task.state.task.round == 2
    round_two = ndimage.binary_dilation(session.mask("liver"))
    session.setMask("liver", round_two)
    make_ready(a)
    assert a.task.submit()
    a.wait_until(lambda: a.task.current is None, TIMEOUT_S)

    # round 2: the proposal is the reader's latest submission; the reviewer edits the liver and approves
    claim_review(reviewer)
    assert review.state.round == 2 and len(review.state.readers) == 1
    assert np.array_equal(mask_of(review.review.consensusNode, review.protocol, "liver"), round_two)
    reviewer.wait_until(lambda: not review.state.checking, TIMEOUT_S)
    approve = review.state.actions["approve"]
    assert not approve.enabled and "Left lung: required structure is empty (no reason given)" in approve.reason
    assert review.edit("liver")
    trimmed = mask_of(review.review.editedNode, review.protocol, "liver")
    trimmed[: trimmed.shape[0] // 2] = False  # the reviewer erases the upper half, as the Segment Editor would
    setSegmentMask(
        review.review.editedNode, structureSegments(review.review.editedNode, review.protocol)["liver"], trimmed
    )
    review.check_final()
    reviewer.wait_until(lambda: not review.state.checking, TIMEOUT_S)
    for structure_id in ("lung_left", "lung_right"):
        assert review.override(structure_id, None, "the reader was asked for the liver only")
    assert review.state.actions["approve"].enabled, review.state.actions["approve"].reason
    assert review.approve()
    reviewer.wait_until(lambda: reviewer.task.current is None, TIMEOUT_S)
    assert review.state.stage == "decided" and "approved" in reviewer.task.message
    final_path = tmp_path / "final.seg.nrrd"
    final_path.write_bytes(study.admin.get(f"/api/v1/projects/{study.project_id}/cases/{study.case_id}/final").content)
    assert np.array_equal(read_reader(final_path, chest_protocol()).mask("liver"), trimmed)

    # after approval the reader sees the case, read only: one reader and the final
    a.review.open_case(a.task.client, study.project_id, a.task.protocol, study.case_id)
    a.wait_until(lambda: a.review.state.stage in ("ready", "none"), TIMEOUT_S)
    assert a.review.state.stage == "ready", a.review.message
    assert a.review.final_node is not None and a.review.state.one_reader == study.a.name
    assert a.export.state.what.endswith(": the approved final")
