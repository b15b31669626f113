"""The durable outbox against the real server: a submission made while the server is down waits, also across
a client restart in a new process, and is delivered exactly once; a lost acknowledgement is resent and
stored once; a send cut by a crash resumes; offline is detected when the server is killed mid-session."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time

import pytest

from MedAnnotAssistLib.core.jobs import Heartbeat
from MedAnnotAssistLib.core.lease import Lease
from MedAnnotAssistLib.core.outbox import DELIVERED, FAILED, PENDING, Outbox
from MedAnnotAssistLib.core.queue_client import QueueClient
from MedAnnotAssistLib.core.queue_errors import Offline
from Testing.server.conftest import BACKENDS
from Testing.server.harness import tiny_metadata

from .conftest import make_study
from .doubles import TlsProxy

# one client process: deliver what the outbox holds (and first enqueue a submission, when given one)
CLIENT_PROCESS = """
import json, os, sys
from MedAnnotAssistLib.core.outbox import Outbox
from MedAnnotAssistLib.core.queue_client import QueueClient

request = json.loads(sys.argv[1])
client = QueueClient(request["url"], os.environ["MEDANNOT_TEST_TOKEN"], retries=0)
outbox = Outbox(request["outbox"])
if request.get("task"):
    outbox.enqueue(client.url, request["project_id"], request["task"], request["file"], request["metadata"],
                   request["user"])
report = outbox.deliver(client, force=True)
print(json.dumps({"delivered": [e.id for e in report.delivered], "offline": report.offline,
                  "states": [e.state for e in outbox.entries()]}))
"""


def _client_process(token: str, **request) -> dict:
    environment = dict(os.environ, MEDANNOT_TEST_TOKEN=token)  # never on a command line
    done = subprocess.run(
        [sys.executable, "-c", CLIENT_PROCESS, json.dumps(request, default=str)],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_submission_made_offline_waits_across_a_restart_and_is_delivered_once(
    backend, start_queue, tiny_image_file, tmp_path
):
    queue = start_queue(backend)
    study = make_study(queue, tiny_image_file, tmp_path / "files")
    task = study.client(study.a).claim(study.project_id)
    queue.server.stop()  # the server goes down while A works
    common = {"url": queue.url, "outbox": str(tmp_path / "outbox")}
    first = _client_process(
        study.a.token,
        **common,
        task=task,
        project_id=study.project_id,
        file=study.segmentation("a"),
        metadata=tiny_metadata(),
        user=study.a.name,
    )
    assert first == {"delivered": [], "offline": True, "states": [PENDING]}
    waiting = Outbox(tmp_path / "outbox").entries()
    # not even tried: who the token is (``me``) could not be asked
    assert [(e.state, e.attempts, e.file.is_file()) for e in waiting] == [(PENDING, 0, True)]

    queue.server.start()  # same port, same data
    second = _client_process(study.a.token, **common)  # a new process: the client was restarted
    assert second == {"delivered": [waiting[0].id], "offline": False, "states": [DELIVERED]}
    third = _client_process(study.a.token, **common)
    assert third == {"delivered": [], "offline": False, "states": [DELIVERED]}

    held = study.submissions_on_server()
    assert [(s["reader"], s["task_id"]) for s in held] == [(study.a.name, task["id"])]
    delivered = Outbox(tmp_path / "outbox").get(waiting[0].id)
    assert delivered.response["submission_id"] == held[0]["id"] and not delivered.file.exists()


def test_a_lost_acknowledgement_is_resent_and_stored_once(study, tmp_path):
    """The server stores the submission but its answer never arrives (the proxy drops it): the outbox keeps it
    pending, resends it with the same Idempotency-Key, and gets the first answer: one submission."""
    proxy = TlsProxy(study.queue.url, tmp_path)
    try:
        a = QueueClient(proxy.url, study.a.token, ca_bundle=proxy.certificate, retries=0)
        a.me()
        outbox = Outbox(tmp_path / "outbox")
        task = a.claim(study.project_id)
        entry = outbox.enqueue(a.url, study.project_id, task, study.segmentation("a"), tiny_metadata(), a.user)
        proxy.drop_answers = 1
        report = outbox.deliver(a)
        assert report.offline and [e.state for e in report.waiting] == [PENDING]
        stored = study.submissions_on_server()
        assert len(stored) == 1  # the server did act
        again = outbox.deliver(a, force=True)
        assert [e.response["submission_id"] for e in again.delivered] == [stored[0]["id"]]
        assert study.submissions_on_server() == stored
        posts = [path for method, path in proxy.requests if method == "POST" and path.endswith("/submissions")]
        assert len(posts) == 2 and outbox.get(entry.id).attempts == 2
    finally:
        proxy.close()


def test_a_send_cut_by_a_crash_resumes_at_start(study, tmp_path):
    a = study.client(study.a)
    a.me()
    outbox = Outbox(tmp_path / "outbox")
    entry = outbox.enqueue(a.url, study.project_id, a.claim(study.project_id), study.segmentation("a"), tiny_metadata())
    with sqlite3.connect(tmp_path / "outbox" / "outbox.sqlite3") as connection:  # as a killed process leaves it
        connection.execute("UPDATE submissions SET state = 'sending' WHERE id = ?", (entry.id,))
    assert outbox.deliver(a).delivered == []  # sending: not this process's to send
    restarted = Outbox(tmp_path / "outbox")
    assert restarted.get(entry.id).state == PENDING
    assert [e.id for e in restarted.deliver(a).delivered] == [entry.id]
    assert len(study.submissions_on_server()) == 1


def test_offline_is_detected_when_the_server_is_killed_mid_session(study, tmp_path):
    """SIGKILL mid-session: calls raise Offline and the client says offline (its listener hears it once), the
    heartbeat goes on marking the lease offline, not lost, the outbox keeps the submission with a backoff; when
    the server is back all of it recovers and the submission is delivered once."""
    server = study.queue.server
    a = study.client(study.a, retries=1)
    heard = []
    a.on_connection_change(heard.append)
    a.me()
    task = a.claim(study.project_id)
    lease = Lease(a, study.project_id, task, interval_s=0.2)
    heartbeat = Heartbeat(lease).start()
    now = [1000.0]
    outbox = Outbox(tmp_path / "outbox", backoff_s=5, max_backoff_s=60, clock=lambda: now[0])
    entry = outbox.enqueue(a.url, study.project_id, task, study.segmentation("a"), tiny_metadata(), a.user)
    try:
        server.kill()
        with pytest.raises(Offline) as caught:
            a.case(study.project_id, study.case_id)
        assert "does not answer" in caught.value.message and caught.value.status is None
        assert a.offline is True and heard == [True, False] and a.last_offline is caught.value
        _wait_for(lambda: lease.offline, "the heartbeat to notice")
        assert lease.alive and lease.lost is None and heartbeat.running

        report = outbox.deliver(a)
        assert report.offline and report.delivered == [] and outbox.pending_count(a.url) == 1
        waiting = outbox.get(entry.id)
        assert (waiting.state, waiting.attempts, waiting.next_attempt_at) == (PENDING, 1, 1005.0)
        now[0] += 1
        assert outbox.deliver(a).waiting == []  # its backoff is not over: not tried
        now[0] += 5
        assert outbox.get(outbox.deliver(a).waiting[0].id).next_attempt_at == 1016.0  # 10 s after the 2nd
        assert outbox.seconds_until_due(a.url) == 10.0
    finally:
        server.start()
    _wait_for(lambda: not lease.offline and lease.beats > 0, "the heartbeat to come back")
    assert heard == [True, False, True] and a.offline is False
    report = outbox.deliver(a, force=True)
    assert [e.state for e in report.delivered] == [DELIVERED] and outbox.pending_count() == 0
    heartbeat.stop()
    assert not heartbeat.running and len(study.submissions_on_server()) == 1


def test_only_the_user_who_submitted_sends_it(study, tmp_path):
    a, b = study.client(study.a), study.client(study.b)
    a.me()
    outbox = Outbox(tmp_path / "outbox")
    entry = outbox.enqueue(
        a.url, study.project_id, a.claim(study.project_id), study.segmentation("a"), tiny_metadata(), a.user
    )
    assert outbox.deliver(b, force=True).delivered == [] and b.user == study.b.name
    assert outbox.get(entry.id).state == PENDING and study.submissions_on_server() == []
    assert [e.id for e in outbox.deliver(a).delivered] == [entry.id]


def test_a_damaged_outbox_copy_is_never_sent(study, tmp_path):
    a = study.client(study.a)
    outbox = Outbox(tmp_path / "outbox")
    entry = outbox.enqueue(a.url, study.project_id, a.claim(study.project_id), study.segmentation("a"), tiny_metadata())
    entry.file.write_bytes(entry.file.read_bytes()[:-10])
    failed = outbox.send(a, entry.id)
    assert (
        failed.state == FAILED
        and failed.error_code == "outbox_file_damaged"
        and "was changed" in failed.error["message"]
    )
    assert study.submissions_on_server() == []
    with pytest.raises(ValueError, match="only a refused submission can be changed"):
        outbox.retarget(
            outbox.enqueue(a.url, study.project_id, {"id": 1, "lease_id": "x"}, study.segmentation("b"), {}).id,
            {"id": 2, "lease_id": "y"},
        )
    outbox.discard(entry.id)
    assert outbox.get(entry.id) is None and not entry.file.exists()


def test_enqueue_refuses_what_could_never_be_sent(tmp_path):
    outbox = Outbox(tmp_path / "outbox")
    seg = tmp_path / "a.seg.nrrd"
    seg.write_bytes(b"NRRD0004\n")
    with pytest.raises(FileNotFoundError, match="missing.seg.nrrd does not exist"):
        outbox.enqueue("http://127.0.0.1:1", 1, {"id": 1, "lease_id": "l"}, tmp_path / "missing.seg.nrrd", {})
    with pytest.raises(ValueError, match="task 1 has no lease_id"):
        outbox.enqueue("http://127.0.0.1:1", 1, {"id": 1}, seg, {})
    with pytest.raises(ValueError, match="the metadata of a.seg.nrrd is not JSON"):
        outbox.enqueue("http://127.0.0.1:1", 1, {"id": 1, "lease_id": "l"}, seg, {"time_spent_s": float("nan")})
    assert outbox.entries() == [] and list((tmp_path / "outbox" / "files").iterdir()) == []
    assert oct((tmp_path / "outbox").stat().st_mode & 0o777) == "0o700"


def _wait_for(condition, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout} s for {what}"
        time.sleep(0.05)
