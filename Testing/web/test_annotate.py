"""The browser annotator end to end, against the real queue server, in Debian's Chromium: an annotator signs in,
claims, sees the AI pre-segmentation, paints on a structure and submits; two annotators work at the same time
in two browser contexts, each on their own app process, and neither page ever holds the other's name, token or
segments; the reviewer sees the agreement table and approves."""

from __future__ import annotations

import time

import pytest

from .conftest import shot
from .pages import (
    claim,
    claim_review,
    client_state,
    make_ready,
    model,
    never_shows,
    open_page,
    paint_stroke,
    row,
    signed_in,
    submit,
    wait_for,
    was_sent,
)

pytestmark = pytest.mark.slow


def submissions(study) -> list[dict]:
    admin = study.admin
    return admin.ok(admin.get(f"/api/v1/projects/{study.project_id}/cases/{study.case_id}/submissions"))


def test_an_annotator_claims_sees_the_ai_paints_and_submits(study, start_app, browser):
    app = start_app(study.a, study.queue.url)
    page = open_page(browser, app)
    state = signed_in(page)
    assert state["task"]["user"] == study.a.name
    assert page.get_by_test_id("user").inner_text().strip() == study.a.name
    assert "Signed in as" in page.get_by_test_id("task-connection").inner_text()

    state = claim(page)
    liver = row(state, "liver")
    assert liver["state"] == "suggested" and liver["ai"].startswith("AI: totalsegmentator")
    assert page.get_by_test_id("row-liver").locator(".ai-badge").is_visible()
    before = liver["voxels"]
    assert not state["protocol"]["in_3d"]  # slices only until "Show in 3-D", as in Slicer
    page.get_by_test_id("protocol-3d").locator("input").check()
    wait_for(page, lambda s: s["protocol"]["in_3d"], "the volume rendering")
    shot(page, "claimed")

    paint_stroke(page, "liver")
    state = wait_for(page, lambda s: row(s, "liver")["voxels"] > before, "the painted voxels")
    assert row(state, "liver")["state"] == "refined"
    shot(page, "painted")

    page.get_by_test_id("undo").click()  # undo and redo go through trame-slicer's stack
    wait_for(page, lambda s: row(s, "liver")["voxels"] == before, "the stroke undone")
    page.get_by_test_id("redo").click()
    wait_for(page, lambda s: row(s, "liver")["voxels"] > before, "the stroke redone")

    make_ready(page)
    state = submit(page)
    assert "submitted" in state["task"]["message"]
    [submission] = submissions(study)
    assert submission["reader"] == study.a.name
    history = [e["event"] for e in submission["metadata"]["segments"]["liver"]["history"]]
    assert history[0] == "proposed" and "edited" in history
    assert app.stop() == 0  # SIGTERM: a clean exit


def test_two_annotators_at_once_stay_blind_and_the_reviewer_approves(study, start_app, browser):
    apps = {who.name: start_app(who, study.queue.url) for who in (study.a, study.b)}
    pages = {name: open_page(browser, app) for name, app in apps.items()}
    other = {study.a.name: study.b, study.b.name: study.a}

    def blind() -> None:
        for name, page in pages.items():
            never_shows(page, other[name].name, other[name].token, study.reviewer.token, study.admin.token)
            never_shows(page, study.a.token, study.b.token)  # not even the page's own user's token
            assert was_sent(page, name)  # what the recording sees: the page's own user's name, sent by the app
            review = model(page, "review")
            assert review["stage"] == "none" and review["readers"] == [] and review["rows"] == []

    for page in pages.values():
        claim(page)
    tasks = {name: model(page, "task")["task"]["id"] for name, page in pages.items()}
    assert len(set(tasks.values())) == 2  # the case's two tasks, one each
    blind()
    paint_stroke(pages[study.a.name], "liver")
    for page in pages.values():
        make_ready(page)
    for page in pages.values():  # both Submits in flight together
        page.get_by_test_id("task-submit").click()
    for page in pages.values():
        wait_for(page, lambda s: s["task"]["task"] is None, "the case submitted")
    blind()
    assert sorted(s["reader"] for s in submissions(study)) == sorted(apps)

    reviewer = open_page(browser, start_app(study.reviewer, study.queue.url))
    signed_in(reviewer)

    state = claim_review(reviewer)
    table = reviewer.get_by_test_id("agreement-table")
    table.wait_for()
    assert {r["structure_id"] for r in state["review"]["rows"]} >= {"liver", "lung_left", "lung_right"}
    assert reviewer.get_by_test_id("agreement-liver").locator(".verdict").inner_text().strip()
    assert reviewer.get_by_test_id("agreement-liver").locator(".dice").inner_text().strip() != "-"
    assert sorted(r["name"] for r in state["review"]["readers"]) == sorted(apps)
    reviewer.get_by_test_id(f"reader-{study.a.name}").locator("input").uncheck()
    wait_for(
        reviewer,
        lambda s: not next(r for r in s["review"]["readers"] if r["name"] == study.a.name)["visible"],
        "reader A hidden",
    )
    shot(reviewer, "review")

    while True:  # a reason for each structure the approved final would fail (the empty lungs)
        state = wait_for(reviewer, lambda s: not s["review"]["checking"], "the final checked")
        failing = [r["structure_id"] for r in state["review"]["rows"] if r["failures"] and not r["override"]]
        if not failing:
            break
        reviewer.get_by_test_id(f"agreement-{failing[0]}").click()
        reviewer.get_by_test_id("review-reason").locator("input").fill("the readers were asked for the liver only")
        reviewer.get_by_test_id("review-keep").click()
        wait_for(
            reviewer,
            lambda s, sid=failing[0]: next(r for r in s["review"]["rows"] if r["structure_id"] == sid)["override"],
            f"{failing[0]} kept",
        )
    state = wait_for(reviewer, lambda s: s["review"]["actions"]["approve"]["enabled"], "Approve on")
    reviewer.get_by_test_id("review-approve").click()
    state = wait_for(reviewer, lambda s: s["task"]["task"] is None, "the case approved")
    admin = study.admin
    case = admin.ok(admin.get(f"/api/v1/projects/{study.project_id}/cases/{study.case_id}"))
    assert case["state"] == "approved", case
    assert client_state(reviewer)["review"]["message"]


def test_the_ct_engine_runs_from_the_ai_section_with_its_progress(study, start_app, browser):
    page = open_page(browser, start_app(study.a, study.queue.url))
    claim(page)
    state = wait_for(page, lambda s: s["ai"]["engine"] and s["ai"]["targets"], "the engine's structures")
    assert state["ai"]["engine"] == "ct" and {t["structure_id"] for t in state["ai"]["targets"]} >= {"lung_left"}
    assert row(state, "lung_left")["state"] == "empty" and row(state, "lung_left")["ai"] is None
    page.get_by_test_id("protocol-3d").locator("input").check()
    page.get_by_test_id("ai-run").click()
    state = wait_for(page, lambda s: s["ai"]["last_run"] and s["ai"]["progress"] is None, "the engine's proposal")
    assert state["ai"]["last_run"].startswith("ct ") and "Left lung" in state["ai"]["last_run"]
    state = wait_for(page, lambda s: not s["protocol"]["checking"] and row(s, "lung_left")["voxels"], "the rules")
    lung = row(state, "lung_left")
    assert lung["state"] == "suggested" and lung["ai"].startswith("AI: ct")
    page.get_by_test_id("accept-lung_left").click()
    wait_for(page, lambda s: row(s, "lung_left")["state"] == "accepted", "the left lung accepted")
    page.get_by_test_id("row-lung_right").click()
    page.keyboard.press("Control+Shift+R")  # the reject key, on the selected row
    wait_for(page, lambda s: row(s, "lung_right")["state"] == "rejected", "the right lung rejected by its key")
    time.sleep(2)  # the 3-D view's next frames
    shot(page, "ai")


def test_skip_asks_a_reason_and_release_asks_first(study, sample_dir, start_app, browser):
    second = study.admin.upload_case(study.project_id, sample_dir / "example_ct_sm.nii.gz", "chest-second")
    page = open_page(browser, start_app(study.a, study.queue.url))
    first = claim(page)["task"]["task"]
    page.get_by_test_id("task-skip").click()
    page.get_by_test_id("skip-confirm").click()  # no reason: nothing happens but the message
    state = wait_for(page, lambda s: s["task"]["message"].startswith("skip: give a reason"), "the reason asked")
    assert state["task"]["task"]["id"] == first["id"] and page.get_by_test_id("skip-dialog").is_visible()
    page.get_by_test_id("skip-reason").locator("input").fill("the image is cut at the diaphragm")
    page.get_by_test_id("skip-confirm").click()
    state = wait_for(page, lambda s: s["task"]["task"] and s["task"]["task"]["id"] != first["id"], "the next case")
    assert state["task"]["task"]["case_id"] == second["id"] and page.get_by_test_id("skip-dialog").count() == 0
    events = study.admin.ok(study.admin.get(f"/api/v1/projects/{study.project_id}/audit", params={"limit": 500}))
    skipped = [e for e in events if e["action"] == "task.release" and e["entity_id"] == str(first["id"])]
    assert skipped[-1]["after"]["reason"] == "the image is cut at the diaphragm"

    page.get_by_test_id("task-release").click()
    page.get_by_test_id("release-dialog").wait_for()
    assert model(page, "task")["task"]["case_id"] == second["id"]  # nothing given back before the confirmation
    page.get_by_test_id("release-confirm").click()
    state = wait_for(page, lambda s: s["task"]["task"] is None, "the case released")
    assert state["task"]["message"].endswith("released")


def test_the_reviewer_returns_the_case_to_a_reader_with_a_comment(study, start_app, browser):
    """The readers submit from the desktop's models (headless), the reviewer returns the case from the browser; the
    reader's next task brings the comment."""
    from Testing.workflow.test_review_model import submit as desk_submit

    a, b = study.desk(study.a), study.desk(study.b)
    desk_submit(a)
    desk_submit(b)
    page = open_page(browser, start_app(study.reviewer, study.queue.url))
    signed_in(page)

    claim_review(page)
    page.get_by_test_id("review-return").click()
    page.get_by_test_id("return-reader").click()
    page.locator(".v-overlay--active .v-list-item", has_text=study.a.name).first.click()
    page.get_by_test_id("return-comment").locator("input").fill("the liver: include the caudate lobe")
    page.get_by_test_id("return-confirm").click()
    wait_for(page, lambda s: s["task"]["task"] is None, "the case returned")

    a.wait_until(lambda: a.task.state.actions["next_task"].enabled)
    assert a.task.next_task()
    a.wait_until(lambda: a.task.session is not None)
    assert a.task.state.task.comment == "the liver: include the caudate lobe" and a.task.state.task.round == 2
