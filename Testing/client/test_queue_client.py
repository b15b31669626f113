"""The queue client against the real server: a whole reading study through ``QueueClient`` (every call
docs/queue-api.md's study makes), lease lost, blinding, typed errors, retries and the token's secrecy."""

from __future__ import annotations

import logging
import time

import pytest

from MedAnnotAssistLib.core.image_cache import ImageCache
from MedAnnotAssistLib.core.lease import Lease
from MedAnnotAssistLib.core.outbox import DELIVERED, FAILED, Outbox
from MedAnnotAssistLib.core.queue_client import CONSENSUS_PARTS, QueueClient
from MedAnnotAssistLib.core.queue_errors import (
    AuthError,
    Blinded,
    LeaseLost,
    NotFound,
    Offline,
    ProtocolRejected,
    Rejected,
    ServerError,
    error_from_answer,
)
from Testing.server.harness import TINY_REASON, tiny_metadata, tiny_segmentation

from .conftest import Study


def _submit_through_outbox(study: Study, client: QueueClient, task: dict, outbox: Outbox, tag: str):
    entry = outbox.enqueue(client.url, study.project_id, task, study.segmentation(tag), tiny_metadata(), client.user)
    return outbox.send(client, entry.id)


def test_a_reading_study_through_the_client(study, tmp_path):
    """Two readers claim, heartbeat, load the case through the cache, submit through the outbox; the reviewer
    waits for the consensus, reads everything, uploads an edited final and approves; the readers then see
    the final. Every answer is checked against what the server holds."""
    pid, cid = study.project_id, study.case_id
    ai = tiny_segmentation(study.folder / "ai.seg.nrrd", structure_ids=("liver", "spleen"), tag="ai")
    with open(ai, "rb") as handle:
        put = study.admin.put(
            f"/api/v1/projects/{pid}/cases/{cid}/ai-segmentation",
            files={"segmentation": ("ai.seg.nrrd", handle, "application/octet-stream")},
            data={"engine": "test"},
        )
    study.admin.ok(put)
    cache = ImageCache(tmp_path / "cache")
    outbox = Outbox(tmp_path / "outbox")
    a, b, reviewer = study.client(study.a), study.client(study.b), study.client(study.reviewer)

    me = a.me()
    assert me["name"] == study.a.name == a.user
    assert [p["roles"] for p in me["projects"] if p["id"] == pid] == [["annotator"]]
    assert pid in [p["id"] for p in a.projects()]
    assert a.project(pid)["protocol"]["id"] == "abdominal-organs"

    for reader, tag in ((a, "a"), (b, "b")):
        reader.me()
        task = reader.next_task(pid)
        assert task["case_id"] == cid and task["kind"] == "annotate" and task["lease_id"]
        assert reader.next_task(pid) == task  # a held lease is taken up again, not a second claim
        assert [t["id"] for t in reader.my_tasks(pid)] == [task["id"]]
        lease = Lease(reader, pid, task)
        assert 290 < lease.seconds_left() <= 300  # the server's default lease, on the server's clock
        assert lease.beat() and lease.beats == 1 and lease.alive
        files = reader.fetch_case(pid, cid, cache)
        case = files.case
        assert files.image.name == f"{case['image_sha256']}.nrrd"
        assert files.ai_segmentation.name == f"{case['ai_segmentation']}.seg.nrrd"
        assert files.image.read_bytes() == study.queue.admin.get(f"/api/v1/projects/{pid}/cases/{cid}/image").content
        entry = _submit_through_outbox(study, reader, task, outbox, tag)
        assert entry.state == DELIVERED and entry.response["task_id"] == task["id"] and not entry.file.exists()
        assert entry.response["case_complete"] is (tag == "b")
        assert [s["reader"] for s in reader.submissions(pid, cid)] == [reader.user]  # blind: their own only

    case = reviewer.wait_for_consensus(pid, cid, timeout_s=180, poll_s=0.2)
    assert case["state"] == "review" and case["consensus"]["state"] == "done"
    consensus = reviewer.consensus(pid, cid)
    assert sorted(consensus["readers"]) == sorted([study.a.name, study.b.name])
    parts = {part: reviewer.download_consensus_part(pid, cid, part, tmp_path / part) for part in CONSENSUS_PARTS}
    assert parts["consensus"].filename.endswith("-consensus.seg.nrrd") and parts["consensus"].size > 0
    assert parts["report"].path.read_bytes().lstrip().lower().startswith(b"<!doctype html")
    assert parts["disagreement"].filename.endswith("-disagreement.nrrd")
    submissions = reviewer.submissions(pid, cid)
    assert len(submissions) == 2
    downloaded = reviewer.download_submission(pid, submissions[0]["id"], tmp_path / "first.seg.nrrd")
    assert downloaded.sha256 == submissions[0]["sha256"]

    review = reviewer.claim(pid)
    assert review["kind"] == "review" and review["case_id"] == cid
    edited = reviewer.upload_edited(pid, review["id"], review["lease_id"], downloaded.path)
    assert edited["case_id"] == cid
    overrides = [{"structure": o["structure"], "reason": TINY_REASON} for o in tiny_metadata()["overrides"]]
    decision = reviewer.review(
        pid,
        review["id"],
        review["lease_id"],
        "approve",
        structures={"liver": {"action": "edited"}},
        overrides=overrides,
    )
    assert decision["case_state"] == "approved"
    final = a.download_final(pid, cid, tmp_path / "final.seg.nrrd")
    assert final.sha256 == a.case(pid, cid)["final_sha256"]
    progress = reviewer.progress(pid)
    assert progress["cases"]["approved"] == 1


def test_lease_lost_keeps_the_work_and_a_new_claim_of_the_case_delivers_it(study, tmp_path):
    """A's lease expires and B claims that task: A's submission is refused with LeaseLost (the task's state and
    case known), kept in the outbox as needing the user; claim_again gets A the case's other task, free, and
    the retargeted submission is delivered once."""
    pid, cid = study.project_id, study.case_id
    a, b = study.client(study.a), study.client(study.b)
    outbox = Outbox(tmp_path / "outbox")
    mine = a.claim(pid, lease_seconds=1)
    lease = Lease(a, pid, mine)
    time.sleep(1.5)  # the lease expires on the server
    taken = b.claim(pid)
    assert taken["id"] == mine["id"]  # the expired lease's task goes first (oldest)

    assert lease.beat() is False
    assert isinstance(lease.lost, LeaseLost) and lease.lost.task_state == "leased" and lease.lost.task_free is False
    assert (lease.lost.project_id, lease.lost.task_id, lease.lost.case_id) == (pid, mine["id"], cid)

    entry = _submit_through_outbox(study, a, mine, outbox, "a")
    assert entry.state == FAILED and entry.needs_user and entry.error_code == "lease_lost"
    assert entry.error["task_state"] == "leased" and entry.file.is_file()
    with pytest.raises(LeaseLost) as caught:
        a.submit(pid, mine["id"], mine["lease_id"], entry.file, tiny_metadata(), "direct-try")
    assert caught.value.task_id == mine["id"] and "claim a task again" in caught.value.message

    again = a.claim_again(pid, cid)
    assert again is not None and again["case_id"] == cid and again["id"] != mine["id"]
    delivered = outbox.send(a, outbox.retarget(entry.id, again).id)
    assert delivered.state == DELIVERED and delivered.response["task_id"] == again["id"]
    assert [(s["reader"], s["task_id"]) for s in study.submissions_on_server()] == [(study.a.name, again["id"])]
    assert a.claim_again(pid, cid) is None  # nothing of the case is free for A any more


def test_claim_again_releases_a_task_of_another_case(study, tiny_image_file, tmp_path):
    """When the claim returns another case's task, it goes back to the queue at once and the answer is None."""
    pid = study.project_id
    other = study.admin.upload_case(pid, tiny_image_file, "other-case", priority=5)  # claimed first
    a = study.client(study.a)
    assert a.claim_again(pid, study.case_id + 10_000) is None
    assert a.my_tasks(pid) == []
    task = study.client(study.b).claim(pid)
    assert task["case_id"] == other["id"]  # it was free again


def test_blinded_reader_sees_neither_consensus_nor_others(study, tmp_path):
    """A reader of the case gets Blinded for its consensus and final, None for its consensus job, and only their
    own submission, while the reviewer sees both readers."""
    pid, cid = study.project_id, study.case_id
    a, b, reviewer = study.client(study.a), study.client(study.b), study.client(study.reviewer)
    outbox = Outbox(tmp_path / "outbox")
    for reader, tag in ((a, "a"), (b, "b")):
        reader.me()
        _submit_through_outbox(study, reader, reader.claim(pid), outbox, tag)
    reviewer.wait_for_consensus(pid, cid, timeout_s=180, poll_s=0.2)
    with pytest.raises(Blinded) as caught:
        a.consensus(pid, cid)
    assert caught.value.status == 403 and caught.value.code == "blinded" and "approved" in caught.value.message
    with pytest.raises(Blinded):
        a.download_consensus_part(pid, cid, "consensus", tmp_path / "c.seg.nrrd")
    with pytest.raises(Blinded):
        a.download_final(pid, cid, tmp_path / "f.seg.nrrd")
    assert not (tmp_path / "c.seg.nrrd").exists() and list(tmp_path.glob("*.part")) == []
    assert a.case(pid, cid)["consensus"] is None
    assert [s["reader"] for s in a.submissions(pid, cid)] == [study.a.name]
    assert sorted(s["reader"] for s in reviewer.submissions(pid, cid)) == sorted([study.a.name, study.b.name])
    assert reviewer.consensus(pid, cid)["case_id"] == cid


def test_protocol_rejection_lists_the_rules_and_an_amended_submission_goes(study, tmp_path):
    pid = study.project_id
    a = study.client(study.a)
    a.me()
    outbox = Outbox(tmp_path / "outbox")
    task = a.claim(pid)
    entry = outbox.enqueue(a.url, pid, task, study.segmentation("a"), {"time_spent_s": 12}, a.user)
    refused = outbox.send(a, entry.id)
    assert refused.state == FAILED and refused.error_code == "protocol_rules_failed"
    rules = {(f["structure"], f["rule"]) for f in refused.failures}
    assert ("liver", "volumeMl") in rules and ("spleen", "required") in rules
    with pytest.raises(ProtocolRejected) as caught:
        a.submit(pid, task["id"], task["lease_id"], refused.file, {"time_spent_s": 12}, None)
    failure = next(f for f in caught.value.failures if (f.structure, f.rule) == ("liver", "volumeMl"))
    assert failure.name == "Liver" and failure.message.startswith("Liver: volume") and failure.measured > 0
    assert study.submissions_on_server() == []  # a refusal stores nothing
    delivered = outbox.send(a, outbox.amend(entry.id, metadata=tiny_metadata(12)).id)
    assert delivered.state == DELIVERED and delivered.idempotency_key != entry.idempotency_key
    assert len(study.submissions_on_server()) == 1


def test_errors_are_typed_with_code_and_details(study, tmp_path):
    pid = study.project_id
    with pytest.raises(AuthError) as caught:
        QueueClient(study.queue.url, "mat_not-a-token").me()
    assert caught.value.status == 401 and caught.value.code == "invalid_token"
    a = study.client(study.a)
    with pytest.raises(NotFound) as missing:
        a.case(pid, 987_654)
    assert missing.value.code == "case_not_found" and missing.value.url.endswith("/cases/987654")
    with pytest.raises(NotFound) as hidden:
        a.project(pid + 10_000)
    assert hidden.value.code == "project_not_found"
    with pytest.raises(ValueError, match="expected one of consensus, disagreement, report"):
        a.download_consensus_part(pid, study.case_id, "everything", tmp_path / "x")
    # a proxy's HTML error page is not the queue's JSON: typed by its status alone
    proxy_page = error_from_answer(502, None, "u")
    assert isinstance(proxy_page, ServerError) and proxy_page.code == "http_502" and proxy_page.retryable
    too_large = error_from_answer(413, {"code": "upload_too_large", "message": "m", "limit_bytes": 4}, "u")
    assert isinstance(too_large, Rejected) and too_large.details == {"limit_bytes": 4} and not too_large.retryable
    busy = error_from_answer(503, {"code": "database_unavailable", "message": "m"}, "u", retry_after="3")
    assert isinstance(busy, ServerError) and busy.retry_after == 3.0


def test_bad_settings_are_refused_naming_them(tmp_path):
    with pytest.raises(ValueError, match="expected its address like https://"):
        QueueClient("queue.example.org", "t")
    with pytest.raises(ValueError, match="plain http to another machine would send the token"):
        QueueClient("http://queue.example.org", "t")
    assert QueueClient("http://queue.example.org/api/v1/", "t", allow_http=True).url == "http://queue.example.org"
    with pytest.raises(ValueError, match="the token must be one word"):
        QueueClient("https://queue.example.org", "two words")
    with pytest.raises(ValueError, match="no such file"):
        QueueClient("https://queue.example.org", "t", ca_bundle=tmp_path / "missing.pem")


def test_the_token_is_never_logged_shown_or_stored(study, tmp_path, caplog):
    pid = study.project_id
    a = study.client(study.a)
    caplog.set_level(logging.DEBUG)
    outbox = Outbox(tmp_path / "outbox")
    a.me()
    task = a.claim(pid)
    outbox.enqueue(a.url, pid, task, study.segmentation("a"), tiny_metadata(), a.user)
    study.queue.server.stop()
    try:
        with pytest.raises(Offline):
            a.health()
        outbox.deliver(a)
    finally:
        study.queue.server.start()
    assert "POST /api/v1/projects/" in caplog.text and "does not answer" in caplog.text  # it did log its calls
    token = study.a.token
    assert token not in caplog.text and token not in repr(a) and token not in repr(a._session.auth)
    stored = b"".join(path.read_bytes() for path in (tmp_path / "outbox").rglob("*") if path.is_file())
    assert token.encode() not in stored and a.url.encode() in stored


def test_idempotent_calls_retry_through_an_outage_and_a_claim_does_not(study):
    """The server is down: a GET waits with a doubling backoff, and the server coming back during the wait
    lets it through; a claim is sent once (a retry could take a second task) and raises Offline at once."""
    server = study.queue.server
    waits = []

    def wait(seconds):
        waits.append(seconds)
        if len(waits) == 2:
            server.start()

    a = study.client(study.a, backoff_s=0.5, sleep=wait)
    server.stop()
    try:
        assert a.me()["name"] == study.a.name
        assert waits == [0.5, 1.0]
        server.stop()
        waits.clear()
        with pytest.raises(Offline):
            a.claim(study.project_id)
        assert waits == []
    finally:
        if not server.alive():
            server.start()
    assert a.claim(study.project_id)["case_id"] == study.case_id
