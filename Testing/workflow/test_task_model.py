"""The task panel's model against the real server: a lost lease (the work kept, a new claim of the case), the
offline indicator and the outbox across an outage, skip with a reason, the case's active time on a
controlled clock, and the token kept out of every state, event, setting and log record."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest
from scipy import ndimage

from MedAnnotAssistLib.core.activity import ManualClock
from MedAnnotAssistLib.core.image_cache import ImageCache
from MedAnnotAssistLib.core.jobs import Heartbeat
from MedAnnotAssistLib.core.outbox import Outbox
from MedAnnotAssistLib.mrml.scene import SceneContext
from MedAnnotAssistLib.workflow.settings import WorkstationSettings
from MedAnnotAssistLib.workflow.workstation import Workstation
from Testing.server.harness import unique

from .conftest import TIMEOUT_S, make_ready, make_study, open_case


def _events(desk) -> list:
    seen = []
    for model in desk.models:
        model.subscribe(seen.append)
    return seen


def _short_lease(study, who):
    settings = WorkstationSettings(server_url=study.queue.url, sync_interval_s=0.5, lease_seconds=2)
    desk = study.desk(who, settings=settings)
    session = open_case(desk)
    desk.task.current.heartbeat.stop()  # the laptop sleeps: no heartbeat while the lease runs out
    time.sleep(2.5)
    taken = study.b.claim(study.project_id)
    assert taken["id"] == desk.task.current.task["id"]  # B gets A's expired task (the oldest)
    return desk, session


def _submissions(study) -> list[tuple[str, int]]:
    admin = study.admin
    found = admin.ok(admin.get(f"/api/v1/projects/{study.project_id}/cases/{study.case_id}/submissions"))
    return [(item["reader"], item["task_id"]) for item in found]


def test_a_lease_lost_while_working_goes_on_under_a_new_claim(study):
    """The heartbeat finds the lease taken by B: the panel says so and keeps the case open with the reader's
    edit; Claim again takes the case's other task, and the case is submitted with it."""
    desk, session = _short_lease(study, study.a)
    task, events = desk.task, _events(desk)
    edited = ndimage.binary_erosion(session.mask("liver"))
    session.setMask("liver", edited)
    lost_task = task.current.task["id"]
    Heartbeat(task.current.lease).start()  # the laptop wakes up: the next heartbeat meets B's claim
    desk.wait_until(lambda: task.state.lease.state == "lost", TIMEOUT_S)
    assert [e.payload for e in events if e.name == "lease_lost"] == [{"task_state": "leased", "case_id": study.case_id}]
    assert task.state.lease.text == "lease lost: someone else holds it; your work is kept (Claim again)"
    assert task.state.message_is_error and "someone else holds it" in task.state.message
    assert not task.state.actions["release"].enabled and task.state.actions["claim_again"].enabled

    assert task.claim_again()
    desk.wait_until(lambda: task.state.lease.state == "held", TIMEOUT_S)
    assert task.current.task["id"] != lost_task and task.session is session
    assert np.array_equal(session.mask("liver"), edited)  # the work was never touched
    assert session.task_info["task_id"] == task.current.task["id"]
    make_ready(desk)
    assert task.submit()
    desk.wait_until(lambda: task.current is None, TIMEOUT_S)
    [(reader, task_id)] = _submissions(study)
    assert reader == study.a.name and task_id not in (lost_task, None)


def test_a_submission_refused_for_a_lost_lease_is_kept_and_sent_with_a_new_claim(study):
    """A submits without noticing the loss: the server refuses it (lease_lost); it stays in the outbox with its
    file and the case stays open; A edits once more; Claim again takes the case's free task and submits the
    case as it is now (the edit included), once."""
    desk, session = _short_lease(study, study.a)
    task = desk.task
    make_ready(desk)
    assert task.submit()
    desk.wait_until(lambda: task.state.outbox.failed, TIMEOUT_S)
    kept = task.state.outbox.failed[0]
    assert kept.lease_lost and kept.code == "lease_lost" and kept.case_id == study.case_id
    assert task.state.lease.state == "lost" and task.session is session and not session.closed
    assert "your work is kept in the outbox: Claim again to send it" in task.message
    assert task.outbox.get(kept.id).file.is_file() and _submissions(study) == []

    edited = ndimage.binary_erosion(session.mask("liver"))
    session.setMask("liver", edited)  # an edit after the refusal: the new submission holds it
    make_ready(desk)
    assert task.claim_again()
    desk.wait_until(lambda: task.current is None, TIMEOUT_S)
    assert "submitted (submission" in task.message
    assert task.state.outbox.failed == () and task.state.outbox.pending == 0
    assert task.outbox.get(kept.id) is None  # the refused copy went: the scene's work was sent instead
    [(reader, task_id)] = _submissions(study)
    assert reader == study.a.name and task_id != kept.task_id
    assert not task.state.actions["claim_again"].enabled
    admin = study.admin
    [item] = admin.ok(admin.get(f"/api/v1/projects/{study.project_id}/cases/{study.case_id}/submissions"))
    assert [e["event"] for e in item["metadata"]["segments"]["liver"]["history"]] == ["proposed", "edited", "final"]


@pytest.mark.slow
def test_a_refused_submission_from_an_earlier_sitting_is_sent_with_a_new_claim(study, tmp_path):
    """The application closed with a submission refused for a lost lease: the next sitting lists it (the
    outbox resumes at sign-in) and Claim again sends the kept file with a new claim of its case."""
    desk, _ = _short_lease(study, study.a)
    make_ready(desk)
    outbox = desk.task.outbox
    assert desk.task.submit()
    desk.wait_until(lambda: desk.task.state.outbox.failed, TIMEOUT_S)
    desk.close()  # the case leaves the scene; the outbox keeps the refused submission

    later = study.desk(study.a, outbox=Outbox(outbox.folder, backoff_s=0.2))
    task = later.task
    later.wait_until(lambda: task.state.outbox.failed, TIMEOUT_S)
    [kept] = task.state.outbox.failed
    assert kept.lease_lost and task.current is None and task.state.actions["claim_again"].enabled
    assert not task.claim_again(kept.id + 100) and "no submission" in task.message
    assert task.claim_again(kept.id)
    later.wait_until(lambda: not task.state.outbox.failed, TIMEOUT_S)
    assert task.message.startswith(f"case {study.case_id}: submitted with a new claim (submission")
    [(reader, task_id)] = _submissions(study)
    assert reader == study.a.name and task_id != kept.task_id


def test_offline_indicator_and_the_outbox_across_an_outage(start_queue, protocol, sample_dir, ai_liver, tmp_path):
    """The server dies while A works: the indicator turns offline; Submit keeps the case in the outbox and
    closes it; the server comes back, the outbox delivers it once and the indicator turns online."""
    queue = start_queue("sqlite")
    study = make_study(queue, protocol, sample_dir, ai_liver, tmp_path)
    try:
        desk = study.desk(study.a)
        task = desk.task
        open_case(desk)
        make_ready(desk)
        assert not task.state.offline and task.state.offline_text == ""
        queue.server.kill()
        desk.wait_until(lambda: task.state.offline, TIMEOUT_S)
        assert task.state.offline_text == "offline: submissions wait in the outbox"
        assert task.state.actions["submit"].enabled  # offline never stops a submission: the outbox keeps it
        assert task.submit()
        desk.wait_until(lambda: task.current is None, TIMEOUT_S)
        assert task.message.endswith("submitted (in the outbox)") and task.state.outbox.pending == 1
        assert task.state.outbox.text == "1 submission(s) waiting to be sent"

        queue.server.start()
        desk.wait_until(lambda: task.state.outbox.pending == 0, TIMEOUT_S)
        assert not task.state.offline and "1 submission(s) delivered from the outbox" in task.message
        assert [reader for reader, _ in _submissions(study)] == [study.a.name]
    finally:
        study.close()


def test_skip_with_a_reason_gives_the_next_case_and_records_why(study, sample_dir):
    second = study.admin.upload_case(study.project_id, sample_dir / "example_ct_sm.nii.gz", unique("chest"))
    desk = study.desk(study.a)
    task = desk.task
    assert task.state.actions["select_project"].enabled
    first = open_case(desk)
    first_task = task.current.task["id"]
    # the project stays while a case is in hand (the panel greys its choice out and says why)
    assert task.state.actions["select_project"].reason == "finish or release the task in hand first"
    assert not task.select_project(study.project_id) and task.message.startswith("select project: finish")
    assert not task.skip("  ") and task.message == "skip: give a reason (it is recorded with the case)"
    assert task.skip("the image is cut at the diaphragm")
    desk.wait_until(lambda: task.session is not None and task.session is not first, TIMEOUT_S)
    assert first.closed and task.current.task["case_id"] == second["id"]
    admin = study.admin
    events = admin.ok(admin.get(f"/api/v1/projects/{study.project_id}/audit", params={"limit": 500}))
    released = [e for e in events if e["action"] == "task.release" and e["entity_id"] == str(first_task)]
    assert released and released[-1]["after"]["reason"] == "the image is cut at the diaphragm"
    assert study.b.claim(study.project_id)["case_id"] == study.case_id  # the skipped case is free again

    assert task.release()
    desk.wait_until(lambda: task.current is None, TIMEOUT_S)
    assert task.message.endswith("released") and task.session is None


def test_active_time_excludes_idle_and_paused_time(study):
    """On a controlled clock: 5 s reading, 20 s on the liver, 100 s away from the application (paused by the
    front-end), 10 s on the liver, a scroll, a 600 s silence (60 s count), a touch, 3 s. The panel shows it
    and the submission carries it."""
    clock = ManualClock(1000.0)
    desk = study.desk(study.a, clock=clock)
    task = desk.task
    open_case(desk)
    clock.advance(5)
    assert desk.protocol.select("liver")
    clock.advance(20)
    task.pause()
    assert task.state.times.paused and task.state.actions["resume"].enabled
    clock.advance(100)
    task.resume()
    clock.advance(10)
    task.touch()  # a scroll in a slice view
    clock.advance(600)
    task.poll()
    assert task.state.times.idle and task.state.times.idle_s == 540
    task.touch()
    clock.advance(3)
    task.poll()
    assert task.state.times.case_s == 98 and task.state.times.structures == {"liver": 93}
    assert not task.state.times.idle and not task.state.times.paused
    times = task.times()
    assert (times.case_s, times.unassigned_s, times.idle_s, times.paused_s) == (98.0, 5.0, 540.0, 100.0)

    make_ready(desk)
    assert task.submit()
    desk.wait_until(lambda: task.current is None, TIMEOUT_S)
    admin = study.admin
    [item] = admin.ok(admin.get(f"/api/v1/projects/{study.project_id}/cases/{study.case_id}/submissions"))
    metadata = item["metadata"]
    assert metadata["time_spent_s"] == 98.0 and metadata["segments"]["liver"]["active_s"] == 93.0
    assert metadata["timing"]["idle_s"] == 540.0 and metadata["timing"]["paused_s"] == 100.0


def test_the_token_never_shows(study, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    desk = study.desk(study.a)
    seen = _events(desk)
    open_case(desk)
    make_ready(desk)
    assert desk.task.submit()
    desk.wait_until(lambda: desk.task.current is None, TIMEOUT_S)

    wrong = "Z9" + study.a.token[2:]  # a refused token goes through the same paths
    refused = Workstation(
        SceneContext.headless(),
        WorkstationSettings(server_url=study.queue.url),
        work_dir=tmp_path / "w",
        outbox=Outbox(tmp_path / "outbox"),
        cache=ImageCache(tmp_path / "cache"),
    )
    seen += _events(refused)
    assert not refused.task.connect(wrong, server_url="queue.example.org")
    assert refused.task.message.startswith("queue server URL: expected its address like https://")
    assert refused.task.connect(wrong)
    refused.wait_until(lambda: refused.task.state.connection == "disconnected", TIMEOUT_S)
    assert refused.task.state.message.startswith("the server refused the token")
    refused.close()

    shown = [repr(model.state) for desk_ in (desk, refused) for model in desk_.models]
    shown += [repr(event) for event in seen] + [repr(desk.settings.to_json()), repr(desk.task.client)]
    shown += [caplog.text]
    stored = b"".join(p.read_bytes() for p in (study.root).rglob("*") if p.is_file() and "outbox" in str(p))
    for token in (study.a.token, wrong):
        assert not [text for text in shown if token in text]
        assert token.encode() not in stored
    assert any("POST /api/v1/projects" in record.getMessage() for record in caplog.records)  # it did log calls
    with pytest.raises(ValueError, match="a token is never stored with the settings"):
        WorkstationSettings.from_json({"server_url": study.queue.url, "token": study.a.token})
