"""The reviewer's edited final is checked again after each stroke, without the view asking: a stroke that breaks a
rule (a second piece of the liver) turns Approve off with that rule named, as the server would refuse it; and a
refusal by the server itself names the failed rules and keeps the review task in hand."""

from __future__ import annotations

import numpy as np
import pytest

from MedAnnotAssistLib.mrml.protocol_segments import structureSegments
from MedAnnotAssistLib.mrml.segmentation import segmentMasks, setSegmentMask

from .conftest import TIMEOUT_S
from .test_review_model import claim_review, submit

pytestmark = pytest.mark.slow

REASON = "the readers were asked for the liver only"


def test_a_stroke_on_the_edited_copy_is_checked_and_a_server_refusal_names_the_rule(study):
    submit(study.desk(study.a))
    submit(study.desk(study.b))
    reviewer = study.desk(study.reviewer)
    review = reviewer.review
    claim_review(reviewer)
    for structure_id in ("lung_left", "lung_right"):
        assert review.override(structure_id, None, REASON)
    assert review.edit("liver")
    reviewer.wait_until(lambda: not review.state.checking, TIMEOUT_S)
    assert review.state.actions["approve"].enabled, review.state.actions["approve"].reason

    edited = review.review.editedNode
    segment = structureSegments(edited, review.protocol)["liver"]
    liver = segmentMasks(edited, [segment])[0][segment]
    stroke = liver.copy()
    far = np.argwhere(~liver)[0]  # a corner of the image, away from the liver: a second connected piece
    stroke[tuple(far)] = True
    setSegmentMask(edited, segment, stroke)  # as a Paint stroke does; nobody calls check_final
    assert not review.approve() and "checking the final" in review.message  # not before the stroke is checked
    reviewer.wait_until(lambda: not review.state.checking, TIMEOUT_S)
    approve = review.state.actions["approve"]
    assert not approve.enabled and "Liver: 2 connected component(s)" in approve.reason, approve.reason

    review.failures = {}  # a gate out of date (as before each stroke was checked): the server is the one to refuse
    assert review.approve()
    reviewer.wait_until(lambda: not review.background.running("decision"), TIMEOUT_S)
    state = review.state
    assert state.message_is_error and "the server refused the final: Liver: 2 connected component(s)" in state.message
    assert state.stage == "ready" and reviewer.task.current is not None  # the review task and the edit are kept
    assert any("Liver: 2 connected component(s)" in p for p in state.final_problems)
    assert review.override("liver", None, "a second piece on purpose, for this test")
    assert review.approve()
    reviewer.wait_until(lambda: reviewer.task.current is None, TIMEOUT_S)
    case = study.admin.ok(study.admin.get(f"/api/v1/projects/{study.project_id}/cases/{study.case_id}"))
    assert case["state"] == "approved"
