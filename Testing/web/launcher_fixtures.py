"""Fixtures of the launcher's tests (its test modules import them): a real queue server with users, and launchers
started as the product starts them (``python -m medannotassist_web.launcher``), each user's app being the test
double in ``child_app.py``."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from medannotassist_web.launcher import LAUNCHER_READY
from medannotassist_web.sessions import free_port
from Testing.conftest import REPO
from Testing.server.conftest import Queue
from Testing.server.harness import unique

CHILD = f"{shlex.quote(sys.executable)} -m Testing.web.child_app"
TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def queue_server(tmp_path_factory):
    instance = Queue(tmp_path_factory.mktemp("queue"), None)
    yield instance
    instance.stop()


@pytest.fixture
def people(queue_server):
    """Two users of the queue server (``Api`` with name and token) by first name, fresh for each test."""
    return {who: queue_server.admin.new_user(unique(who)) for who in ("ann", "ben")}


@dataclass
class RunningLauncher:
    process: subprocess.Popen
    url: str
    data_dir: Path

    def browser(self) -> httpx.Client:
        """A browser of its own: its own cookie jar, redirects not followed (the tests look at them)."""
        return httpx.Client(base_url=self.url, timeout=TIMEOUT_S, follow_redirects=False)

    def sign_in(self, browser: httpx.Client, token: str) -> httpx.Response:
        return browser.post("/_launcher/sign-in", data={"token": token})

    def whoami(self, browser: httpx.Client) -> dict:
        answer = browser.get("/whoami")
        assert answer.status_code == 200, answer.text[:500]
        return answer.json()

    def health(self) -> dict:
        return httpx.get(self.url + "/_launcher/health", timeout=TIMEOUT_S).json()

    def app_pids(self) -> list[int]:
        return [child.pid for child in psutil.Process(self.process.pid).children(recursive=True)]

    def stop(self, signum=signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
        return self.process.wait(TIMEOUT_S)


def run_async(coroutine):
    """``asyncio.run`` on a thread of its own: the session's Playwright (sync API) keeps an event loop running on
    the main thread, where ``asyncio.run`` refuses to start."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def gone(pid: int, timeout: float = TIMEOUT_S) -> bool:
    """The process ``pid`` has exited (a zombie counts as exited) within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def start_launcher(queue_server, tmp_path):
    """``start_launcher(*options)``: a launcher on a free loopback port, ready; stopped (and checked to leave no
    app running) after the test."""
    started: list[RunningLauncher] = []

    def start(*options: str, app_command: str = CHILD, server: str | None = None) -> RunningLauncher:
        port = free_port()
        data_dir = tmp_path / f"launcher-{len(started)}"
        command = [sys.executable, "-m", "medannotassist_web.launcher", "--server", server or queue_server.url]
        command += ["--data-dir", str(data_dir), "--port", str(port), "--app-command", app_command, *options]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
        running = RunningLauncher(process, f"http://127.0.0.1:{port}", data_dir)
        started.append(running)
        line = process.stdout.readline()
        assert line.startswith(LAUNCHER_READY), f"the launcher said {line!r} (exit {process.poll()})"
        return running

    yield start
    for running in started:
        children = running.app_pids() if running.process.poll() is None else []
        with contextlib.suppress(subprocess.TimeoutExpired):
            running.stop()
        assert all(gone(pid, 15) for pid in children), "an app outlived its launcher"
