"""Bad input in the browser annotator, each with its message and no work lost: a wrong token, the server lost
while a case is open (offline indicator and outbox count; the submission reaches the server when it is back),
the lease lost while editing (the app's process sleeps as a laptop does; the work is kept and submitted under
a new claim), and the protocol's rules refusing Submit (the message names the failed rule)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from Testing.server.harness import Api

from .conftest import make_study, shot
from .pages import (
    claim,
    client_state,
    keep_blocking,
    make_ready,
    open_page,
    paint_stroke,
    row,
    signed_in,
    submit,
    wait_for,
)
from .test_annotate import submissions

pytestmark = pytest.mark.slow


def test_a_wrong_token_is_told_and_nothing_is_shown(study, start_app, browser):
    wrong = Api(study.queue.url, "mat_" + "x" * 43, "nobody")
    page = open_page(browser, start_app(wrong, study.queue.url))
    state = wait_for(page, lambda s: s["task"]["message_is_error"], "the refusal")
    message = page.get_by_test_id("task-message")
    assert "token" in message.inner_text().lower(), message.inner_text()
    assert "error" in message.get_attribute("class")
    assert state["task"]["connection"] != "connected" and state["task"]["user"] is None
    assert page.get_by_test_id("task-connection").inner_text().strip() == "Not connected."
    assert not page.get_by_test_id("task-next-task").is_enabled()
    assert page.get_by_test_id("protocol-table").count() == 0
    shot(page, "wrong-token")


def test_a_lost_server_shows_offline_and_the_outbox_delivers_when_it_is_back(
    start_queue, protocol, sample_dir, ai_liver, tmp_path, start_app, browser
):
    queue = start_queue("sqlite")
    study = make_study(queue, protocol, sample_dir, ai_liver, tmp_path)
    page = open_page(browser, start_app(study.a, queue.url, sync_interval_s=0.5))
    claim(page)
    paint_stroke(page, "liver")
    make_ready(page)
    voxels = row(client_state(page), "liver")["voxels"]
    assert page.get_by_test_id("offline-indicator").count() == 0

    queue.server.kill()
    page.get_by_test_id("offline-indicator").wait_for(timeout=60_000)
    assert "offline" in page.get_by_test_id("offline-indicator").inner_text()
    assert row(client_state(page), "liver")["voxels"] == voxels  # the open case is untouched
    state = submit(page)  # offline never stops a submission: the outbox keeps it
    assert state["task"]["message"].endswith("submitted (in the outbox)")
    assert state["task"]["outbox"]["pending"] == 1
    assert page.get_by_test_id("outbox-count").inner_text().strip() == "outbox 1"
    shot(page, "offline")

    queue.server.start()
    wait_for(page, lambda s: s["task"]["outbox"]["pending"] == 0 and not s["task"]["offline"], "the delivery")
    assert page.get_by_test_id("outbox-count").inner_text().strip() == "outbox 0"
    assert page.get_by_test_id("offline-indicator").count() == 0
    [submission] = submissions(study)
    assert submission["reader"] == study.a.name
    assert "edited" in [e["event"] for e in submission["metadata"]["segments"]["liver"]["history"]]


def test_a_lease_lost_while_editing_keeps_the_work(study, start_app, browser):
    app = start_app(study.a, study.queue.url, lease_seconds=2)
    page = open_page(browser, app)
    state = claim(page)
    before = row(state, "liver")["voxels"]
    paint_stroke(page, "liver")
    state = wait_for(page, lambda s: row(s, "liver")["voxels"] > before, "the stroke")
    painted, lost_task = row(state, "liver")["voxels"], state["task"]["task"]["id"]

    os.kill(app.process.pid, signal.SIGSTOP)  # the laptop sleeps: no heartbeat while the lease runs out
    try:
        time.sleep(2.5)
        assert study.b.claim(study.project_id)["id"] == lost_task  # B gets A's expired task
    finally:
        os.kill(app.process.pid, signal.SIGCONT)
    state = wait_for(page, lambda s: s["task"]["lease"]["state"] == "lost", "the lost lease")
    lease = page.get_by_test_id("task-lease")
    assert "lease lost" in lease.inner_text() and "your work is kept" in lease.inner_text()
    assert "error" in lease.get_attribute("class")
    assert row(state, "liver")["voxels"] == painted and row(state, "liver")["state"] == "refined"
    shot(page, "lease-lost")

    page.get_by_test_id("task-claim-again").click()
    state = wait_for(page, lambda s: s["task"]["lease"]["state"] == "held", "the new claim")
    assert state["task"]["task"]["id"] != lost_task and row(state, "liver")["voxels"] == painted
    make_ready(page)
    submit(page)
    [submission] = submissions(study)
    assert submission["reader"] == study.a.name and submission["task_id"] != lost_task


def test_a_protocol_rule_refusing_submit_is_named_and_the_work_kept(study, start_app, browser):
    page = open_page(browser, start_app(study.a, study.queue.url))
    state = claim(page)
    before = row(state, "liver")["voxels"]
    keep_blocking(page, "the lungs are not asked for in this test")
    paint_stroke(page, "liver", start=(0.78, 0.45), end=(0.82, 0.46))  # an island apart from the liver
    state = wait_for(page, lambda s: row(s, "liver")["blocking"], "the rule failing")
    [rule] = row(state, "liver")["blocking"]
    assert "connected component" in rule["text"]
    gate = page.get_by_test_id("submit-gate").inner_text()
    assert "Liver: 2 connected component(s), at most 1 allowed" in gate
    submit_button = page.get_by_test_id("task-submit")
    assert not submit_button.is_enabled()
    page.keyboard.press("Control+Shift+Enter")  # the Submit key says why it does nothing
    status = page.get_by_test_id("status")
    status.wait_for()
    assert status.inner_text().startswith("Ctrl+Shift+Return: ") and "connected component" in status.inner_text()
    shot(page, "rule-refused")
    assert submissions(study) == []
    painted = row(client_state(page), "liver")["voxels"]
    assert painted > before

    make_ready(page, "a second liver part, seen on the next slices")  # the reason lets it through
    submit(page)
    [submission] = submissions(study)
    assert submission["metadata"]["segments"]["liver"]["history"][-1]["event"] == "final"
    assert signed_in(page)["task"]["task"] is None
