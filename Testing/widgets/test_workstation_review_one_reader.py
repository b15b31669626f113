"""The Review section on a one-reader case, on the real .ui behind the stand-in, against the real server: the
reader's segmentation is the proposal (the Consensus box says Proposal and stays on), the disagreement boxes
are off and say why, the rows say "one reader" instead of Dice and HD95, and the reviewer decides and approves
as for any case."""

from __future__ import annotations

import pytest
from scipy import ndimage

from Testing.qtstandin import user
from Testing.widgets import test_workstation_panels as panels
from Testing.widgets.test_workstation_panels import keep, row_of, rows, sign_in, wait, words
from Testing.workflow.conftest import make_study
from Testing.workflow.test_review_model import submit

pytestmark = pytest.mark.slow

# the panels' test's fixtures: a server for this module, the chest protocol, the module opened as Slicer does
queue, protocol, ai_liver = panels.queue, panels.protocol, panels.ai_liver
settings_folder, workstation = panels.settings_folder, panels.workstation


def test_a_reviewer_decides_a_one_reader_case_on_the_panel(queue, protocol, sample_dir, ai_liver, workstation):
    desk = workstation.widget.workstation
    study = make_study(queue, protocol, sample_dir, ai_liver, desk.work_dir / "study", readers=1)
    try:
        submit(study.desk(study.a), lambda liver: ndimage.binary_erosion(liver))
        task, review = workstation.widget.sections["Task"], workstation.widget.sections["Review"]
        sign_in(task, queue.url, study.reviewer.token)
        wait(lambda: desk.task.protocol is not None)
        user.click(task.nextTaskButton)
        wait(lambda: desk.review.state.stage == "ready")
        name, reader = desk.review.state.case_name, study.a.name
        assert (
            words(review.reviewCaseLabel)
            == f"{name}, round 1: one reader ({reader}); their segmentation is the proposal"
        )
        proposal = review.consensusCheckBox
        assert proposal.text() == "Proposal" and proposal.isEnabled() and proposal.isChecked()
        assert proposal.toolTip() == "The reader's segmentation, the proposal, in the views."
        for box in (review.disagreementSlicesCheckBox, review.disagreement3DCheckBox):
            assert not box.isEnabled() and not box.isChecked()
            assert box.toolTip().startswith("Not now: one reader: no disagreement map")
        agreement = review.agreementTable
        shown = rows(agreement)
        assert sorted(shown) == ["Index nodule", "Left lung", "Liver", "Right lung"]
        assert all(cells[2:5] == ["one reader", "-", "-"] for cells in shown.values())
        liver = agreement.cellWidget(row_of(agreement, "Liver"), 5)
        assert [liver.itemText(i) for i in range(liver.count())] == ["Proposal", reader, "Your edit"]
        assert liver.currentText() == "Proposal" and liver.toolTip() == f"the proposal ({reader})"

        # the proposal off and on in the views; the liver from the reader; the empty lungs kept with a reason
        user.click(proposal)
        assert not desk.review.state.consensus_visible and not proposal.isChecked()
        user.click(proposal)
        assert desk.review.state.consensus_visible
        user.choose(liver, liver.findText(reader))
        wait(lambda: not desk.review.state.checking)
        assert desk.review.state.row("liver").reader == reader
        assert not review.approveButton.isEnabled() and "Left lung: required" in review.approveButton.toolTip()
        keep(agreement, "Left lung", review.reviewReasonLineEdit, review.reviewKeepButton)
        keep(agreement, "Right lung", review.reviewReasonLineEdit, review.reviewKeepButton)
        assert review.approveButton.isEnabled()
        user.click(review.approveButton)
        wait(lambda: desk.task.current is None)
        admin = study.admin
        case = admin.ok(admin.get(f"/api/v1/projects/{study.project_id}/cases/{study.case_id}"))
        assert case["state"] == "approved" and case["final_sha256"]
    finally:
        study.close()
