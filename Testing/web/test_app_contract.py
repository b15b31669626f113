"""The app's contract with the launcher: the token only from MEDANNOT_TOKEN (never on the command line), the
given host and port only, HTTP 200 on / once the ready line is printed, a clean exit on SIGTERM."""

from __future__ import annotations

import subprocess
import sys
import urllib.request

import psutil

from .conftest import REPO


def test_ready_on_its_address_only_then_a_clean_sigterm(study, start_app):
    app = start_app(study.a, study.queue.url)
    assert f"medannot-web ready {app.url}" in app.out.read_text().splitlines()
    with urllib.request.urlopen(app.url, timeout=10) as answer:  # noqa: S310 (loopback)
        assert answer.status == 200 and b"<html" in answer.read().lower()
    process = psutil.Process(app.process.pid)
    listening = {c.laddr for c in process.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}
    assert {(address.ip, address.port) for address in listening} == {("127.0.0.1", app.port)}
    assert study.a.token not in " ".join(process.cmdline())
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
