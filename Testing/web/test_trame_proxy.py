"""The launcher in front of a real trame-slicer server (``trame_app.py``, trame-slicer's own segmentation app under
the app contract), in Chromium: the page, its redirect and trame's websocket pass through the front address, and
one session's memory is recorded."""

from __future__ import annotations

import shlex
import sys
import time

import psutil
import pytest

from Testing.web import launcher_fixtures

pytestmark = pytest.mark.slow
queue_server, people, start_launcher = (
    launcher_fixtures.queue_server,
    launcher_fixtures.people,
    launcher_fixtures.start_launcher,
)

TRAME_APP = f"{shlex.quote(sys.executable)} -m Testing.web.trame_app"


def test_a_trame_slicer_app_works_through_the_front_address(start_launcher, people, tmp_path, browser):
    launcher = start_launcher("--start-timeout-s", "240", app_command=TRAME_APP)
    context = browser.new_context()  # the session's Chromium (Testing/web/conftest.py), a context of its own
    try:
        page = context.new_page()
        sockets, frames = [], []

        def opened(socket) -> None:
            sockets.append(socket)
            socket.on("framereceived", lambda frame: frames.append(len(frame)))

        page.on("websocket", opened)
        page.goto(launcher.url + "/")
        page.fill("#token", people["ann"].token)
        with page.expect_navigation(timeout=240_000) as navigation:
            page.click("#sign-in")
        assert navigation.value.status == 200
        assert page.url == launcher.url + "/index.html"  # trame's redirect, kept on the front address
        page.wait_for_load_state("networkidle", timeout=120_000)
        deadline = time.monotonic() + 60
        while len(frames) < 5 and time.monotonic() < deadline:  # trame's state and the views' images
            page.wait_for_timeout(250)
        assert [socket.url for socket in sockets] == [launcher.url.replace("http", "ws") + "/ws"]
        assert len(frames) >= 5 and not sockets[0].is_closed()
        assert page.get_by_text("Segmentation App").is_visible()
        page.screenshot(path=tmp_path / "trame-through-launcher.png")
        (app,) = [
            psutil.Process(pid) for pid in launcher.app_pids() if "trame_app" in " ".join(psutil.Process(pid).cmdline())
        ]
        rss = sum(p.memory_info().rss for p in [app, *app.children(recursive=True)])
        print(f"one trame-slicer session: {rss / 2**20:.0f} MiB resident")
    finally:
        context.close()
    assert launcher.stop() == 0
