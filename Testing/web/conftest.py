"""Fixtures of the browser annotator's tests: the real queue server and study of Testing/workflow (the chest
protocol, annotators ``a`` and ``b``, a reviewer, the sample CT with its AI liver), one app process per user
started as the launcher starts it (token in ``MEDANNOT_TOKEN``, ready line on stdout, SIGTERM to stop), and
Debian's Chromium driven by Playwright (never a downloaded browser)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from Testing.conftest import REPO
from Testing.workflow.conftest import ai_liver, database_for, make_study, postgres_cluster, protocol, queue, start_queue  # noqa: F401 (fixtures)  # noqa: F401 (fixtures)

CHROMIUM = Path(os.environ.get("MEDANNOT_CHROMIUM", "/usr/bin/chromium"))
SHOTS = Path(os.environ.get("MEDANNOT_WEB_SHOTS", REPO / "var" / "web-shots"))  # the tests' screenshots
READY_S = 90.0
VIEWPORT = {"width": 1500, "height": 900}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class WebApp:
    """``python -m medannotassist_web.app`` for one user, as the launcher starts it."""

    def __init__(
        self, token: str, server_url: str, data_dir: Path, settings: dict | None = None, secret: str | None = None
    ):
        self.port = free_port()
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.out, self.err = data_dir / "stdout.txt", data_dir / "stderr.txt"
        command = [sys.executable, "-m", "medannotassist_web.app", "--host", "127.0.0.1", "--port", str(self.port)]
        command += ["--server", server_url, "--data-dir", str(data_dir / "data")]
        if settings:
            (data_dir / "settings.json").write_text(json.dumps(settings))
            command += ["--settings", str(data_dir / "settings.json")]
        paths = [str(REPO / "MedAnnotAssist"), str(REPO / "Server"), str(REPO / "Web"), str(REPO)]
        env = os.environ | {"MEDANNOT_TOKEN": token, "PYTHONPATH": os.pathsep.join(paths)}
        if secret is not None:  # as the launcher passes its session secret
            env["MEDANNOT_SESSION_SECRET"] = secret
        self.command = command
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.process = subprocess.Popen(command, env=env, stdout=out, stderr=err, cwd=data_dir)
        self.url = f"http://127.0.0.1:{self.port}/"
        self.started_s = self.wait_ready()

    def wait_ready(self) -> float:
        start = time.monotonic()
        line = f"medannot-web ready {self.url}"
        while time.monotonic() - start < READY_S:
            if line in self.out.read_text():
                return time.monotonic() - start
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"the app did not get ready (exit {self.process.poll()}):\n{self.log()}")

    def log(self) -> str:
        return self.out.read_text() + "\n" + self.err.read_text()[-4000:]

    def stop(self) -> int:
        """SIGTERM, as the launcher stops it: the process ends by itself, cleanly."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(f"the app ignored SIGTERM:\n{self.log()}") from None
        return self.process.returncode


@pytest.fixture
def start_app(tmp_path):
    """``start_app(api, server_url=None, secret=None, **settings)``: the app of the user of ``api`` (stopped
    afterwards); ``secret``: the launcher's session secret in its environment."""
    started = []

    def start(who, server_url: str, secret: str | None = None, **settings) -> WebApp:
        app = WebApp(who.token, server_url, tmp_path / f"app-{who.name}-{len(started)}", settings or None, secret)
        started.append(app)
        return app

    yield start
    for app in started:
        app.stop()


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium (the tests never download a browser)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def study(queue, protocol, sample_dir, ai_liver, tmp_path):  # noqa: F811 (the workflow fixtures above)
    made = make_study(queue, protocol, sample_dir, ai_liver, tmp_path)
    yield made
    made.close()


def shot(page, name: str) -> Path:
    """A screenshot of the page for docs/web.md (``SHOTS``/web-NAME.png)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"web-{name}.png"
    page.screenshot(path=str(path))
    return path
