"""The reviewer's per-structure "Your edit" in the browser: the liver of the consensus edited with Paint on the
axial view, Approve, and the server's final holds the edited liver; a stroke that breaks a rule (a second piece
of the liver) is named before Approve, and the final keeps it once the reviewer gives a reason."""

from __future__ import annotations

import numpy as np
import pytest

from MedAnnotAssistLib.core.labelio import read_reader
from Testing.task_case import chest_protocol

from .conftest import shot
from .pages import claim_review, drag_on_axial, open_page, signed_in, wait_for

pytestmark = pytest.mark.slow

REASON = "the readers were asked for the liver only"


def review_in_hand(study, start_app, browser):
    """Both readers submit the AI liver from the desktop's models; the reviewer's page claims the review."""
    from Testing.workflow.test_review_model import submit as desk_submit

    desk_submit(study.desk(study.a))
    desk_submit(study.desk(study.b))
    page = open_page(browser, start_app(study.reviewer, study.queue.url))
    signed_in(page)

    claim_review(page)
    return page


def review_row(state: dict, structure_id: str) -> dict:
    return next(r for r in state["review"]["rows"] if r["structure_id"] == structure_id)


def edit_liver(page) -> None:
    page.get_by_test_id("decision-liver").click()
    page.locator(".v-overlay--active .v-list-item", has_text="Your edit").first.click()
    wait_for(page, lambda s: review_row(s, "liver")["decision"] == "edited", "the liver's decision: Your edit")
    assert "Your edit" in page.get_by_test_id("decision-liver").inner_text()
    for structure_id in ("liver", "lung_left"):  # the decision column is wide enough to read, not cut to "C..."
        text = page.get_by_test_id(f"decision-{structure_id}").locator(".v-select__selection-text")
        cut = text.evaluate("e => e.scrollWidth > e.clientWidth")  # an ellipsis: text-overflow hides the rest
        assert not cut, f"the decision of {structure_id} is cut: {text.inner_text()!r}"
        wrapper = page.get_by_test_id("agreement-table").locator(".v-table__wrapper")
        assert wrapper.evaluate("e => e.scrollWidth <= e.clientWidth"), "the agreement table is wider than the panel"
        swatch = page.get_by_test_id(f"agreement-{structure_id}").locator("td").first.locator("span")
        assert swatch.bounding_box()["width"] >= 10, swatch.evaluate("e => e.outerHTML + e.parentElement.outerHTML")


def keep_failing(page) -> dict:
    """A reason for each structure the final would fail, in the review section, then Approve on."""
    while True:
        state = wait_for(page, lambda s: not s["review"]["checking"], "the final checked")
        failing = [r["structure_id"] for r in state["review"]["rows"] if r["failures"] and not r["override"]]
        if not failing:
            break
        page.get_by_test_id(f"agreement-{failing[0]}").locator("td").nth(1).click()  # its name, not its menu
        page.get_by_test_id("review-reason").locator("input").fill(REASON)
        page.get_by_test_id("review-keep").click()
        wait_for(page, lambda s, sid=failing[0]: review_row(s, sid)["override"], f"{failing[0]} kept")
    return wait_for(page, lambda s: s["review"]["actions"]["approve"]["enabled"], "Approve on")


def approve_and_read_final(page, study, tmp_path) -> np.ndarray:
    page.get_by_test_id("review-approve").click()
    wait_for(page, lambda s: s["task"]["task"] is None, "the case approved")
    admin = study.admin
    case = admin.ok(admin.get(f"/api/v1/projects/{study.project_id}/cases/{study.case_id}"))
    assert case["state"] == "approved", case
    final = tmp_path / "final.seg.nrrd"
    final.write_bytes(admin.get(f"/api/v1/projects/{study.project_id}/cases/{study.case_id}/final").content)
    return read_reader(final, chest_protocol()).mask("liver")


def test_the_reviewer_paints_the_liver_in_your_edit_and_the_final_holds_it(
    study, ai_liver, start_app, browser, tmp_path
):
    page = review_in_hand(study, start_app, browser)
    consensus = ai_liver[1]  # both readers sent the AI liver as it came: the consensus liver
    edit_liver(page)
    shot(page, "review")
    drag_on_axial(page, "paint")  # the segment editor holds the edited copy's liver
    wait_for(page, lambda s: s["review"]["checking"] or not s["review"]["actions"]["approve"]["enabled"], "a check")
    keep_failing(page)
    liver = approve_and_read_final(page, study, tmp_path)
    assert liver.sum() > consensus.sum() and liver[consensus].all(), (int(liver.sum()), int(consensus.sum()))


def test_a_stroke_that_breaks_a_rule_is_named_before_approve_and_kept_with_a_reason(
    study, ai_liver, start_app, browser, tmp_path
):
    """A second piece of the liver, painted away from it: the page names the rule at once and Approve waits for a
    reason (before, the final was not checked again after a stroke: Approve stayed on and the server refused)."""
    from scipy import ndimage

    page = review_in_hand(study, start_app, browser)
    consensus = ai_liver[1]
    for structure_id in ("lung_left", "lung_right"):  # the reasons the consensus itself needs, first
        page.get_by_test_id(f"agreement-{structure_id}").locator("td").nth(1).click()
        page.get_by_test_id("review-reason").locator("input").fill(REASON)
        page.get_by_test_id("review-keep").click()
        wait_for(page, lambda s, sid=structure_id: review_row(s, sid)["override"], f"{structure_id} kept")
    edit_liver(page)
    wait_for(page, lambda s: s["review"]["actions"]["approve"]["enabled"], "Approve on for the unedited liver")
    drag_on_axial(page, "paint", (0.75, 0.3), (0.85, 0.32))  # the patient's left, far from the liver
    state = wait_for(page, lambda s: review_row(s, "liver")["failures"], "the liver's new failure")
    assert not state["review"]["actions"]["approve"]["enabled"]
    problems = page.get_by_test_id("review-section").inner_text()
    assert "Liver: 2 connected component(s), at most 1 allowed (no reason given)" in problems, problems
    page.get_by_test_id("agreement-liver").locator("td").nth(1).click()
    page.get_by_test_id("review-reason").locator("input").fill("a second piece on purpose")
    page.get_by_test_id("review-keep").click()
    wait_for(page, lambda s: review_row(s, "liver")["override"], "the liver kept")
    keep_failing(page)
    liver = approve_and_read_final(page, study, tmp_path)
    assert ndimage.label(liver)[1] == 2 and liver.sum() > consensus.sum() and liver[consensus].all()
