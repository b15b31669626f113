"""The launcher's sessions: sign-in against the real queue server, one app process per user (the test double),
reuse, sign-out, idle reaping, the maximum count, and isolation of two people' cookies and processes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import psutil

from medannotassist_web import launcher as launcher_module
from medannotassist_web.launcher import COOKIE
from Testing.web import launcher_fixtures
from Testing.web.launcher_fixtures import CHILD, gone, run_async

# the launcher's fixtures (a module of their own: Testing/web's conftest is the browser app's)
queue_server, people, start_launcher = (
    launcher_fixtures.queue_server,
    launcher_fixtures.people,
    launcher_fixtures.start_launcher,
)


def _set_cookie(answer) -> str:
    header = answer.headers["set-cookie"]
    assert header.startswith(f"{COOKIE}=")
    return header


def test_a_wrong_token_gets_a_clear_error_and_no_session(start_launcher):
    launcher = start_launcher()
    browser = launcher.browser()
    answer = launcher.sign_in(browser, "mat_not-a-token")
    assert answer.status_code == 401
    assert "refused this token (mistyped, expired or revoked)" in answer.text
    assert 'name="token"' in answer.text  # the form again, to try once more
    assert "set-cookie" not in answer.headers
    empty = launcher.sign_in(browser, "   ")
    assert empty.status_code == 400 and "Enter your access token." in empty.text
    assert launcher.health()["sessions"] == 0 and launcher.app_pids() == []


def test_a_queue_server_that_does_not_answer_is_named_on_the_sign_in_page(start_launcher, people):
    launcher = start_launcher(server="http://127.0.0.1:9")
    answer = launcher.sign_in(launcher.browser(), people["ann"].token)
    assert answer.status_code == 502
    assert (
        "The task-queue server at http://127.0.0.1:9 does not answer (ClientConnectorError): try later." in answer.text
    )
    assert 'name="token"' in answer.text and launcher.app_pids() == []


def test_no_cookie_or_an_unknown_one_gets_the_sign_in_page(start_launcher):
    launcher = start_launcher()
    browser = launcher.browser()
    page = browser.get("/")
    assert page.status_code == 200 and 'action="/_launcher/sign-in"' in page.text
    assert "session has ended" not in page.text
    browser.cookies.set(COOKIE, "guessed-or-stale")
    stale = browser.get("/whoami")
    assert stale.status_code == 200 and 'name="token"' in stale.text
    assert "Your session has ended" in stale.text
    assert browser.post("/whoami").status_code == 401  # not passed on to any app
    assert launcher.app_pids() == []


def test_each_app_gets_a_session_secret_of_its_own_and_every_forwarded_request_carries_it(start_launcher, people):
    """The app's port checks the launcher's secret (MEDANNOT_SESSION_SECRET, never on a command line); the proxy
    sends it as X-MedAnnot-Session on each request, in place of any the browser sends."""
    launcher = start_launcher()
    secrets_seen = []
    for who in ("ann", "ben"):
        browser = launcher.browser()
        assert launcher.sign_in(browser, people[who].token).status_code == 303
        process = psutil.Process(launcher.whoami(browser)["pid"])
        secret = process.environ().get("MEDANNOT_SESSION_SECRET", "")
        assert len(secret) >= 43 and secret not in " ".join(process.cmdline())
        answer = browser.get("/whoami", headers={"X-MedAnnot-Session": "forged by the page"})
        received = {key.lower(): value for key, value in answer.json()["headers"].items()}
        assert received["x-medannot-session"] == secret
        secrets_seen.append(secret)
    assert secrets_seen[0] != secrets_seen[1]


def test_sign_in_starts_an_app_the_same_user_reuses_it_and_sign_out_stops_it(start_launcher, people):
    launcher = start_launcher()
    first, second = launcher.browser(), launcher.browser()
    ann = people["ann"]
    answer = launcher.sign_in(first, ann.token)
    assert answer.status_code == 303 and answer.headers["location"] == "/"
    header = _set_cookie(answer).lower()
    assert "httponly" in header and "samesite=strict" in header and "path=/" in header
    me = launcher.whoami(first)
    assert me["user"] == ann.name
    process = psutil.Process(me["pid"])
    assert ann.token not in " ".join(process.cmdline())  # the token travels in the environment only
    assert process.environ()["MEDANNOT_TOKEN"] == ann.token
    assert "--server" in process.cmdline() and process.cmdline()[process.cmdline().index("--server") + 1].startswith(
        "http://127.0.0.1:"
    )
    # the launcher's cookie never reaches the app; the page's own cookies do
    first.cookies.set("theme", "dark")
    seen = launcher.whoami(first)
    assert seen["cookies"] == {"theme": "dark"}
    assert first.cookies[COOKIE] not in str(seen["headers"])
    # a redirect to the app's own address stays on the front address
    assert first.get("/jump").headers["location"] == "/whoami"

    assert launcher.sign_in(second, ann.token).status_code == 303
    assert first.cookies[COOKIE] != second.cookies[COOKIE]
    assert launcher.whoami(second)["pid"] == me["pid"]
    assert launcher.app_pids() == [me["pid"]]

    out = first.post("/_launcher/sign-out")
    assert out.status_code == 303
    assert gone(me["pid"], 15)
    assert launcher.health()["sessions"] == 0
    # every cookie of that user ends with the session
    assert "Your session has ended" in second.get("/whoami").text


def test_two_users_get_two_processes_and_neither_cookie_reaches_the_other(start_launcher, people):
    launcher = start_launcher()
    ann_browser, ben_browser = launcher.browser(), launcher.browser()
    assert launcher.sign_in(ann_browser, people["ann"].token).status_code == 303
    assert launcher.sign_in(ben_browser, people["ben"].token).status_code == 303
    ann, ben = launcher.whoami(ann_browser), launcher.whoami(ben_browser)
    assert (ann["user"], ben["user"]) == (people["ann"].name, people["ben"].name)
    assert ann["pid"] != ben["pid"] and sorted(launcher.app_pids()) == sorted([ann["pid"], ben["pid"]])
    # each process keeps its files apart
    assert Path(launcher.data_dir, "users").is_dir() and len(list(Path(launcher.data_dir, "users").iterdir())) == 2

    async def echo(cookie: str) -> str:
        async with (
            aiohttp.ClientSession(cookies={COOKIE: cookie}) as session,
            session.ws_connect(launcher.url.replace("http", "ws") + "/ws") as socket,
        ):
            await socket.send_str("hello")
            return (await socket.receive(timeout=30)).data

    replies = run_async(
        _gather(echo(ann_browser.cookies[COOKIE]), echo(ben_browser.cookies[COOKIE]))
    )  # both websockets at once
    assert replies == [f"{people['ann'].name}: hello", f"{people['ben'].name}: hello"]
    # repeated requests stay with their own process
    for _ in range(5):
        assert launcher.whoami(ann_browser)["pid"] == ann["pid"]
        assert launcher.whoami(ben_browser)["pid"] == ben["pid"]
    assert launcher.stop() == 0
    assert gone(ann["pid"], 15) and gone(ben["pid"], 15)


async def _gather(*coroutines):
    return list(await asyncio.gather(*coroutines))


def test_an_unused_session_is_reaped_and_a_used_one_kept(start_launcher, people):
    launcher = start_launcher("--idle-timeout-s", "2")
    used, unused = launcher.browser(), launcher.browser()
    launcher.sign_in(used, people["ann"].token)
    launcher.sign_in(unused, people["ben"].token)
    kept, reaped = launcher.whoami(used)["pid"], launcher.whoami(unused)["pid"]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # ann keeps working, ben does nothing
        assert launcher.whoami(used)["pid"] == kept
        time.sleep(0.3)
    assert gone(reaped, 1)
    assert psutil.pid_exists(kept) and launcher.app_pids() == [kept]
    assert "Your session has ended" in unused.get("/whoami").text
    assert launcher.health()["sessions"] == 1


def test_too_many_sessions_gets_a_clear_page_until_one_ends(start_launcher, people):
    launcher = start_launcher("--max-sessions", "1")
    ann_browser, ben_browser = launcher.browser(), launcher.browser()
    assert launcher.sign_in(ann_browser, people["ann"].token).status_code == 303
    full = launcher.sign_in(ben_browser, people["ben"].token)
    assert full.status_code == 503
    assert "Too many sessions: 1 of 1 are open" in full.text and "set-cookie" not in full.headers
    assert launcher.sign_in(launcher.browser(), people["ann"].token).status_code == 303  # her own session: reused
    assert len(launcher.app_pids()) == 1
    ann_browser.post("/_launcher/sign-out")
    assert launcher.sign_in(ben_browser, people["ben"].token).status_code == 303
    assert launcher.whoami(ben_browser)["user"] == people["ben"].name


def test_an_app_that_cannot_start_is_reported_and_its_slot_freed(start_launcher, people):
    launcher = start_launcher("--max-sessions", "1", app_command=f"{CHILD} --fail")
    answer = launcher.sign_in(launcher.browser(), people["ann"].token)
    assert answer.status_code == 502
    assert "exited with status 3 before it was ready" in answer.text
    assert "told to fail before ready" in answer.text  # the end of its log
    assert launcher.health()["sessions"] == 0


def test_a_sign_in_from_another_origin_is_refused(start_launcher, people):
    launcher = start_launcher()
    answer = launcher.browser().post(
        "/_launcher/sign-in", data={"token": people["ann"].token}, headers={"Origin": "http://evil.example"}
    )
    assert answer.status_code == 403 and "Origin header differs" in answer.text
    assert launcher.app_pids() == []


def test_a_non_loopback_host_is_refused(tmp_path, capsys):
    status = launcher_module.main(["--server", "http://127.0.0.1:9", "--data-dir", str(tmp_path), "--host", "0.0.0.0"])
    assert status == 2
    assert "--host 0.0.0.0 is not a loopback address" in capsys.readouterr().err


def test_stopping_the_launcher_with_a_websocket_open_stops_every_app_promptly(start_launcher, people):
    launcher = start_launcher()
    browser = launcher.browser()
    launcher.sign_in(browser, people["ann"].token)
    pid = launcher.whoami(browser)["pid"]

    async def hold_a_websocket_while_stopping() -> tuple[aiohttp.WSMsgType, float]:
        async with (
            aiohttp.ClientSession(cookies={COOKIE: browser.cookies[COOKIE]}) as session,
            session.ws_connect(launcher.url.replace("http", "ws") + "/ws") as socket,
        ):
            await socket.send_str("hello")
            assert (await socket.receive(timeout=30)).data.endswith(": hello")
            started = time.monotonic()
            launcher.process.terminate()
            message = await socket.receive(timeout=30)
            return message.type, time.monotonic() - started

    closed, seconds = run_async(hold_a_websocket_while_stopping())
    assert closed in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
    assert seconds < 10
    assert launcher.process.wait(15) == 0
    assert gone(pid, 1)
