"""TLS, retries and jobs of the queue client: the real server behind a TLS-terminating proxy (a named test
double, ``doubles.TlsProxy``), the heartbeat keeping a short lease alive, and the next case prefetched."""

from __future__ import annotations

import time

import pytest

from MedAnnotAssistLib.core.image_cache import ImageCache
from MedAnnotAssistLib.core.jobs import Heartbeat, Periodic, prefetch
from MedAnnotAssistLib.core.lease import Lease
from MedAnnotAssistLib.core.queue_client import QueueClient
from MedAnnotAssistLib.core.queue_errors import LeaseLost, ServerError, TlsError

from .doubles import TlsProxy, self_signed_certificate


@pytest.fixture
def proxy(study, tmp_path):
    instance = TlsProxy(study.queue.url, tmp_path)
    yield instance
    instance.close()


def test_tls_is_verified_and_the_ca_bundle_setting_wins(study, proxy, tmp_path, monkeypatch):
    """An https server whose certificate the system does not trust is refused with a TlsError naming the
    setting; with ``ca_bundle`` it works, even when REQUESTS_CA_BUNDLE names another authority."""
    with pytest.raises(TlsError) as caught:
        QueueClient(proxy.url, study.a.token).me()
    assert "certificate verify failed" in caught.value.message and "ca_bundle" in caught.value.message
    assert not caught.value.retryable
    (tmp_path / "other").mkdir()
    other, _key = self_signed_certificate(tmp_path / "other")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(other))
    with pytest.raises(TlsError):
        QueueClient(proxy.url, study.a.token).me()  # the environment's authority is not the proxy's
    client = QueueClient(proxy.url, study.a.token, ca_bundle=proxy.certificate)
    assert client.me()["name"] == study.a.name
    task = client.claim(study.project_id)
    assert client.heartbeat(study.project_id, task["id"], task["lease_id"])["id"] == task["id"]


def test_busy_server_answers_are_retried_after_retry_after_on_idempotent_calls_only(study, proxy):
    waits = []
    client = QueueClient(proxy.url, study.a.token, ca_bundle=proxy.certificate, backoff_s=0.1, sleep=waits.append)
    proxy.unavailable = 2
    assert client.my_tasks(study.project_id) == []
    assert waits == [1.0, 1.0]  # the server's Retry-After, above the client's own 0.1 and 0.2 s
    proxy.unavailable = 1
    waits.clear()
    with pytest.raises(ServerError) as caught:
        client.claim(study.project_id)
    assert caught.value.code == "database_unavailable" and caught.value.retry_after == 1.0 and waits == []
    proxy.unavailable = 10
    with pytest.raises(ServerError):
        client.project(study.project_id)
    assert len(waits) == client.retries == 3
    proxy.unavailable = 0


def test_the_heartbeat_job_keeps_a_short_lease_and_stops_when_it_is_lost(study):
    """A 3 s lease heartbeated every 0.5 s outlives its length (another reader's claim does not take it);
    once the heartbeat stops and the lease expires, a claim takes it and the next beat finds it lost."""
    pid = study.project_id
    a = study.client(study.a)
    task = a.claim(pid, lease_seconds=3)
    lease = Lease(a, pid, task, lease_seconds=3, interval_s=0.5)
    heartbeat = Heartbeat(lease).start()
    time.sleep(4.5)
    assert lease.beats >= 5 and lease.alive and heartbeat.last_error is None
    other = study.client(study.b).claim(pid)
    assert other["id"] != task["id"]  # still A's
    heartbeat.stop()
    time.sleep(3.5)
    third = study.admin.new_user(f"c-{pid}")
    study.admin.set_roles(pid, third.name, "annotator")
    assert study.client(third).claim(pid)["id"] == task["id"]  # expired: taken
    assert lease.beat() is False and lease.lost.task_state == "leased" and not lease.alive
    assert lease.beat() is False  # a lost lease is not beaten again


def test_a_periodic_job_goes_on_after_an_error_and_stops_on_false():
    calls = []

    def work():
        calls.append(len(calls))
        if len(calls) == 1:
            raise RuntimeError("first call fails")
        return len(calls) < 3

    job = Periodic("probe", work, 0.01, first_after_s=0).start()
    deadline = time.monotonic() + 10
    while job.running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert calls == [0, 1, 2] and job.calls == 3 and not job.running and job.last_error is None


def test_the_next_case_is_prefetched_into_the_cache(study, tiny_image_file, tmp_path):
    """While A reads the first case, the prefetch job downloads the next task's image; loading that case
    afterwards downloads nothing."""
    pid = study.project_id
    second = study.admin.upload_case(pid, tiny_image_file, f"second-{pid}")
    a = study.client(study.a)
    cache = ImageCache(tmp_path / "cache")
    downloads = []
    original = a.download_image
    a.download_image = lambda *args, **kw: downloads.append(args[1]) or original(*args, **kw)
    current = a.claim(pid)
    upcoming = a.claim(pid)  # the next task, claimed ahead so its image can come now
    assert {current["case_id"], upcoming["case_id"]} == {study.case_id, second["id"]}
    job = prefetch("next case", a.fetch_case, pid, upcoming["case_id"], cache, ai=False)
    files = job.result(60)
    assert job.progress[0] == 1.0 and files.image.is_file() and downloads == [upcoming["case_id"]]
    again = a.fetch_case(pid, upcoming["case_id"], cache)
    assert again.image == files.image and downloads == [upcoming["case_id"]]  # warm: no second download
    # both cases use the same image bytes: the current case is already there too
    assert a.fetch_case(pid, current["case_id"], cache).image == files.image and len(downloads) == 1


def test_a_release_whose_answer_was_lost_is_not_reported_as_lost(study, proxy):
    """The release reaches the server but its answer is dropped: the retry finds the lease gone (the first
    attempt went through) and answers None; a release refused on its first attempt still raises LeaseLost."""
    pid = study.project_id
    client = QueueClient(proxy.url, study.a.token, ca_bundle=proxy.certificate, sleep=lambda s: None)
    task = client.claim(pid)
    proxy.drop_answers = 1
    assert client.release(pid, task["id"], task["lease_id"]) is None
    assert client.my_tasks(pid) == []
    releases = [path for method, path in proxy.requests if path.endswith("/release")]
    assert len(releases) == 2
    task = client.claim(pid)
    assert client.release(pid, task["id"], task["lease_id"])["state"] == "queued"
    with pytest.raises(LeaseLost) as caught:
        client.release(pid, task["id"], task["lease_id"])
    assert caught.value.task_state == "queued" and caught.value.task_free is True


def test_settings_and_cache_folders_follow_the_environment(monkeypatch, tmp_path):
    from MedAnnotAssistLib.core.user_settings import cache_folder, settings_folder

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("MEDANNOT_CONFIG_DIR", raising=False)
    assert settings_folder() == tmp_path / "xdg" / "medannotassist"
    monkeypatch.setenv("MEDANNOT_CONFIG_DIR", str(tmp_path / "mine"))
    assert settings_folder() == tmp_path / "mine" / "medannotassist"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("MEDANNOT_CACHE_DIR", raising=False)
    assert cache_folder() == tmp_path / "cache" / "medannotassist"


def test_the_lease_countdown_uses_the_server_clock():
    """The server's Date header sets the skew (whole seconds: under 2 s is no skew); a lease's seconds left
    are counted on the server's clock, so a client whose clock is 10 minutes off shows the right countdown."""
    from email.utils import formatdate

    client = QueueClient("http://127.0.0.1:9", "t")
    client._note_clock(formatdate(time.time() + 600, usegmt=True))
    assert 599 <= client.clock_skew_s <= 601.5
    expires = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() + 600 + 120)) + "Z"
    lease = Lease(client, 1, {"id": 1, "case_id": 1, "lease_id": "l", "lease_expires_at": expires})
    assert 117 <= lease.seconds_left() <= 121 and lease.interval_s == pytest.approx(lease.seconds_left() / 3, abs=1)
    client._note_clock(formatdate(time.time() + 1, usegmt=True))
    assert client.clock_skew_s == 0.0
