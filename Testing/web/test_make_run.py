"""`make run` end to end: `medannot run` (what the Makefile's run target calls) on a fresh data directory reaches
``ready``, the front address answers in Chromium (Debian's, through Playwright), a signed-in annotator gets the
real browser app, Ctrl-C (SIGINT) or SIGTERM stops everything, and a second run reuses the data."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest

from medannotassist_web.sessions import free_port
from MedAnnotAssistLib.cli.demo_study import CASES, PROJECT, USERS
from Testing.conftest import REPO
from Testing.sample_cache import link_sample_cache
from Testing.web.launcher_fixtures import gone

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"  # Debian's; a browser is never downloaded
READY_TIMEOUT_S = 300.0
APP_TIMEOUT_MS = 240_000  # the first sign-in starts the user's app (slicer-core and trame load)


def sample_cache(root: Path, sample_dir: Path) -> Path:
    """``DATA_DIR/sample-data`` as ``medannot sample-data`` leaves it, linked to ../shared (no download)."""
    return link_sample_cache(root / "sample-data", sample_dir)


@dataclass
class Run:
    """A running `medannot run`, its printed output read up to ``ready``."""

    process: subprocess.Popen
    port: int
    server_port: int
    lines: list[str] = field(default_factory=list)

    @property
    def front(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def tokens(self) -> dict[str, str]:
        rows = (re.match(r"^  (\S+)\s+.*?(mat_\S+)", line) for line in self.lines)
        return {row.group(1): row.group(2) for row in rows if row}

    def processes(self) -> list[psutil.Process]:
        """Itself and everything it started (the queue server, the apps)."""
        me = psutil.Process(self.process.pid)
        return [me, *me.children(recursive=True)]

    def stop(self, signum: int) -> tuple[int, str]:
        self.process.send_signal(signum)
        status = self.process.wait(120)
        return status, self.process.stderr.read()


_STARTED: list[subprocess.Popen] = []  # every medannot run of this module, stopped at teardown if a test failed


@pytest.fixture(autouse=True)
def _stop_what_a_failed_test_left():
    yield
    while _STARTED:
        process = _STARTED.pop()
        if process.poll() is None:  # a failed assertion skipped the test's own stop: SIGTERM stops its children too
            process.terminate()
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def start_run(data_dir: Path) -> Run:
    port, server_port = free_port(), free_port()
    command = [str(Path(sys.executable).with_name("medannot")), "run", "--data-dir", str(data_dir)]
    command += ["--port", str(port), "--server-port", str(server_port)]
    process = subprocess.Popen(
        command, cwd=data_dir.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # the test signals this process alone, as a terminal's Ctrl-C reaches make's child
    )  # fmt: skip
    _STARTED.append(process)
    run = Run(process, port, server_port)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            raise AssertionError(f"medannot run exited ({process.wait()}) before ready:\n{process.stderr.read()}")
        run.lines.append(line.rstrip("\n"))
        if line.strip() == "ready":
            return run
    process.kill()
    raise AssertionError(f"no ready within {READY_TIMEOUT_S} s: {run.lines}")


def assert_nothing_left(started: list[psutil.Process], ports: list[int]) -> None:
    assert all(gone(p.pid, 30) for p in started), [p.pid for p in started if p.is_running()]
    for port in ports:  # both addresses are free again
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/", timeout=5)


def assert_the_app_port_refuses_other_local_users(app: psutil.Process) -> None:
    """Another account on the machine reaching the app's own loopback port (not the front address) gets 403 on
    any HTTP request and on trame's websocket handshake; the secret is in the app's environment, not its argv."""
    argv = app.cmdline()
    port = int(argv[argv.index("--port") + 1])
    for path in ("/", "/index.html", "/ws"):
        answer = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=30)
        assert answer.status_code == 403, (path, answer.status_code, answer.text[:200])
    upgrade = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13"}
    upgrade["Sec-WebSocket-Key"] = base64.b64encode(os.urandom(16)).decode()
    with httpx.stream("GET", f"http://127.0.0.1:{port}/ws", headers=upgrade, timeout=30) as handshake:
        assert handshake.status_code == 403, handshake.status_code
    secret = app.environ().get("MEDANNOT_SESSION_SECRET", "")
    assert len(secret) >= 32 and secret not in " ".join(argv)


def test_the_makefile_runs_medannot_run():
    makefile = (REPO / "Makefile").read_text()
    target = makefile[makefile.index("\nrun: ") :].split("\n\n", 1)[0]
    assert "$(BIN)/medannot run --data-dir var" in target


def test_make_run_reaches_ready_serves_the_sign_in_page_and_a_rerun_reuses_the_data(tmp_path, sample_dir, browser):
    data_dir = tmp_path / "var"
    sample_cache(data_dir, sample_dir)
    run = start_run(data_dir)
    output = "\n".join(run.lines)
    assert run.front in output and f"http://127.0.0.1:{run.server_port}" in output
    assert "Desktop Slicer: in the MedAnnotAssist module's Task section" in output
    tokens = run.tokens
    assert sorted(tokens) == sorted(USERS)
    ai_files = {path: path.stat().st_mtime_ns for path in (data_dir / "demo" / "ai").iterdir()}
    expected = [f"{name}{suffix}" for name in CASES for suffix in (".seg.nrrd", ".presegment.json")]
    assert sorted(path.name for path in ai_files) == sorted(expected)

    page = browser.new_page()
    page.goto(run.front)
    assert page.title() == "Sign in: MedAnnotAssist"
    page.fill("#token", "mat_wrong")
    page.click("#sign-in")
    assert "refused this token" in page.inner_text("#error")
    assert page.locator("#token").is_visible()
    # the server answers the annotator's token with the demo project and her role
    me = httpx.get(
        f"http://127.0.0.1:{run.server_port}/api/v1/me", headers={"Authorization": f"Bearer {tokens['annotator1']}"}
    ).json()
    assert [(p["name"], p["roles"]) for p in me["projects"]] == [(PROJECT, ["annotator"])]

    started = run.processes()
    assert len(started) >= 2  # itself and the queue server
    status, errors = run.stop(signal.SIGINT)
    assert status == 0 and errors.rstrip().endswith("stopped"), errors[-2000:]
    assert_nothing_left(started, [run.port, run.server_port])

    again = start_run(data_dir)
    assert "  made this run      nothing: the data of the last run is reused" in again.lines
    assert again.tokens == tokens
    assert {path: path.stat().st_mtime_ns for path in (data_dir / "demo" / "ai").iterdir()} == ai_files
    admin = {"Authorization": f"Bearer {tokens['demo-admin']}"}
    base = f"http://127.0.0.1:{again.server_port}/api/v1"
    projects = [p for p in httpx.get(f"{base}/projects", headers=admin).json() if p["name"] == PROJECT]
    assert len(projects) == 1
    cases = httpx.get(f"{base}/projects/{projects[0]['id']}/cases", headers=admin).json()
    assert sorted(c["name"] for c in cases) == sorted(CASES)
    assert len(httpx.get(f"{base}/projects/{projects[0]['id']}/members", headers=admin).json()) == 3
    assert os.stat(data_dir / "demo" / "tokens.json").st_mode & 0o077 == 0
    started = again.processes()
    status, errors = again.stop(signal.SIGTERM)
    assert status == 0, errors[-2000:]
    assert_nothing_left(started, [again.port, again.server_port])


def test_a_signed_in_annotator_gets_the_real_app_through_the_front_address(tmp_path, sample_dir, browser):
    """The real ``medannotassist_web.app`` behind the launcher: its page and websocket through the front address,
    one app process for the user, its own port refusing anyone without the launcher's session secret (HTTP and
    websocket), a demo case claimed, its memory printed; all gone after Ctrl-C."""
    data_dir = tmp_path / "var"
    sample_cache(data_dir, sample_dir)
    run = start_run(data_dir)
    page = browser.new_page()
    sockets = []
    page.on("websocket", lambda socket: sockets.append(socket.url))
    page.goto(run.front)
    page.fill("#token", run.tokens["annotator1"])
    with page.expect_navigation(timeout=APP_TIMEOUT_MS) as navigation:
        page.click("#sign-in")
    assert navigation.value.status == 200, page.content()[:2000]
    assert page.locator("#token").count() == 0 and page.locator("#error").count() == 0, page.content()[:2000]
    page.wait_for_load_state("networkidle", timeout=APP_TIMEOUT_MS)
    assert any(url.startswith(f"ws://127.0.0.1:{run.port}/") for url in sockets), sockets
    apps = [p for p in run.processes() if "medannotassist_web.app" in " ".join(p.cmdline())]
    assert len(apps) == 1
    assert_the_app_port_refuses_other_local_users(apps[0])

    def resident_mib() -> float:
        return sum(p.memory_info().rss for p in [apps[0], *apps[0].children(recursive=True)]) / 2**20

    signed_in = resident_mib()
    # the annotator claims a demo case: the CT and its AI pre-segmentation on screen, the editor ready
    page.get_by_test_id("task-next-task").click(timeout=APP_TIMEOUT_MS)
    page.get_by_test_id("editor-toolbar").wait_for(timeout=APP_TIMEOUT_MS)
    page.wait_for_timeout(3000)
    with_case = resident_mib()
    (tmp_path / "app-rss.json").write_text(json.dumps({"signed_in_mib": signed_in, "case_open_mib": with_case}))
    print(f"one app session: {signed_in:.0f} MiB resident once signed in, {with_case:.0f} MiB with a case open")
    started = run.processes()
    status, errors = run.stop(signal.SIGINT)
    assert status == 0, errors[-2000:]
    assert_nothing_left(started, [run.port, run.server_port])
