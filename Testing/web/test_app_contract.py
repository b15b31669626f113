"""The app's contract with the launcher: the token only from MEDANNOT_TOKEN (never on the command line), the
given host and port only, HTTP 200 on / once the ready line is printed, a clean exit on SIGTERM; with the
launcher's session secret (MEDANNOT_SESSION_SECRET) every request and websocket without it is refused."""

from __future__ import annotations

import secrets
import subprocess
import sys
import urllib.request

import aiohttp
import httpx
import psutil

from .conftest import REPO
from .launcher_fixtures import run_async

SECRET_HEADER = "X-MedAnnot-Session"  # the launcher's header, with MEDANNOT_SESSION_SECRET's value


async def websocket_status(url: str, headers: dict[str, str]) -> int:
    """The HTTP status of a websocket handshake on ``url`` (101 when it opened)."""
    async with aiohttp.ClientSession() as client:
        try:
            async with client.ws_connect(url, headers=headers, timeout=aiohttp.ClientWSTimeout(ws_close=10)):
                return 101
        except aiohttp.WSServerHandshakeError as refused:
            return refused.status


def test_ready_on_its_address_only_then_a_clean_sigterm(study, start_app):
    app = start_app(study.a, study.queue.url)
    assert f"medannot-web ready {app.url}" in app.out.read_text().splitlines()
    with urllib.request.urlopen(app.url, timeout=10) as answer:  # noqa: S310 (loopback)
        assert answer.status == 200 and b"<html" in answer.read().lower()
    process = psutil.Process(app.process.pid)
    listening = {c.laddr for c in process.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}
    assert {(address.ip, address.port) for address in listening} == {("127.0.0.1", app.port)}
    assert study.a.token not in " ".join(process.cmdline())
    assert "medannot-web: no MEDANNOT_SESSION_SECRET: this port is unauthenticated" in app.err.read_text()
    assert app.stop() == 0
    assert not psutil.pid_exists(app.process.pid) or psutil.Process(app.process.pid).status() == "zombie"


def test_without_a_token_it_says_where_the_token_goes(study):
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{REPO / 'MedAnnotAssist'}:{REPO / 'Web'}"}
    command = [sys.executable, "-m", "medannotassist_web.app", "--port", "1", "--server", study.queue.url]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "set MEDANNOT_TOKEN to the user's token" in done.stderr


def test_a_taken_port_is_told_in_one_line(study, start_app):
    app = start_app(study.a, study.queue.url)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{REPO / 'MedAnnotAssist'}:{REPO / 'Web'}", "MEDANNOT_TOKEN": "t"}
    command = [sys.executable, "-m", "medannotassist_web.app", "--port", str(app.port), "--server", study.queue.url]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert f"medannot-web: cannot listen on 127.0.0.1:{app.port}: Address already in use" in done.stderr


def test_with_a_session_secret_every_request_and_websocket_without_it_is_refused(study, start_app):
    secret = secrets.token_urlsafe(32)
    app = start_app(study.a, study.queue.url, secret=secret)
    assert secret not in " ".join(psutil.Process(app.process.pid).cmdline())
    assert "unauthenticated" not in app.err.read_text()
    socket_url = app.url.replace("http", "ws", 1) + "ws"
    for headers in ({}, {SECRET_HEADER: "wrong"}, {SECRET_HEADER: secret[:-1]}):
        for path in ("", "index.html", "whatever"):
            assert httpx.get(app.url + path, headers=headers, timeout=30).status_code == 403, (headers, path)
        assert run_async(websocket_status(socket_url, headers)) == 403, headers
    answer = httpx.get(app.url, headers={SECRET_HEADER: secret}, timeout=30)
    assert answer.status_code == 200 and "<html" in answer.text.lower()
    assert run_async(websocket_status(socket_url, {SECRET_HEADER: secret})) == 101
    assert app.stop() == 0
