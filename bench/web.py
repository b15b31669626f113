"""Benchmark: the browser annotator measured in Chromium: a reader's Next case until the case is editable on
screen, and a brush stroke until the view shows it, against the real server on loopback.

Data: as ``bench/client.py``: the real 20-slice 512 x 512 DICOM series of the sample (``example_ct_dicom``) and
the sample CT resampled to 512 x 512 x 300, each with TotalSegmentator's labels as its AI pre-segmentation (13
structures of the bundled ``abdominal-organs`` protocol).

Run: one ``medannot serve`` (SQLite), a project per dataset (one reader per case, no review), one app process
per dataset for the reader (``python -m medannotassist_web.app``, as the launcher starts it, the project chosen in
its settings), Debian's Chromium driven by Playwright, 1500 x 900. The page counts the frames the views receive
(each new image of a view replaces its ``img``'s ``src``; a ``requestAnimationFrame`` loop stamps each new
``src`` of the axial view with ``performance.now()``, so a frame is counted at most one display frame late).

- claim → editable case on screen: from the click on Next case to the first frame of the axial view, received
  after the click, that shows the CT (mean grey of the view above 5 of 255; an empty view is black, 0), with
  the editor's toolbar and the protocol table on the page. Then Release (confirmed) and the next run claims the
  case again. One untimed run first (the app's first case: VTK's pipelines and shaders are built).
- brush stroke → updated view: Paint on the selected structure, a 15-step drag across the axial view; from the
  mouse release to the first frame of the axial view received after it (the committed stroke drawn), and from
  the press to the first frame after it (the live brush feedback).

Medians over the runs; the 1-minute load average at the start. Run: ``.venv/bin/python -m bench.web [--repeats
5] [--note TEXT]``. Writes ``var/bench/web.json`` and the "Browser annotator (Chromium)" section of
docs/benchmarks.md.
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import sys
import time
from importlib import metadata
from pathlib import Path

import psutil

from bench.benchdoc import claim_bench_main
from bench.client import PROTOCOL_ID, _git, prepare, upload
from Testing.server.harness import Api, ServerProcess, create_site_admin
from Testing.web.conftest import CHROMIUM, VIEWPORT, WebApp

REPO = Path(__file__).resolve().parent.parent
SECTION = "## Browser annotator (Chromium)"
WAIT_MS = 120_000
FRAMES_JS = """() => {
  window.__frames = [];
  let lastImg = null, lastSrc = null;
  const canvas = document.createElement('canvas'); canvas.width = 64; canvas.height = 64;
  const context = canvas.getContext('2d', {willReadFrequently: true});
  const watch = () => {
    const imgs = [...document.querySelectorAll('[data-testid=views] img')];
    if (imgs.length) {
      const axial = imgs.reduce((a, b) => (a.width * a.height >= b.width * b.height ? a : b));
      if (axial !== lastImg || axial.src !== lastSrc) {
        lastImg = axial; lastSrc = axial.src;
        const ready = !!(document.querySelector('[data-testid=editor-toolbar]') &&
                         document.querySelector('[data-testid=protocol-table]'));
        window.__frames.push({t: performance.now(), src: axial.src, ready, grey: undefined});
      }
      const frame = window.__frames[window.__frames.length - 1];
      if (frame.grey === undefined && axial.complete && axial.src === frame.src && axial.naturalWidth) {
        context.drawImage(axial, 0, 0, 64, 64);
        const pixels = context.getImageData(0, 0, 64, 64).data;
        let sum = 0; for (let i = 0; i < pixels.length; i += 4) sum += pixels[i];
        frame.grey = sum / (pixels.length / 4);
      }
    }
    requestAnimationFrame(watch);
  };
  requestAnimationFrame(watch);
}"""
# the time of the first frame of the axial view after ``since`` that shows the CT (its mean grey) with the case's
# editor on the page, or null
SHOWN_JS = """([since, grey]) => {
  const frame = window.__frames.find((f) => f.t > since && f.ready && f.grey > grey);
  return frame ? frame.t : null;
}"""
NEXT_FRAME_JS = """([since]) => {
  const frame = window.__frames.find((f) => f.t > since);
  return frame ? frame.t : null;
}"""
AXIAL_JS = """() => {
  const imgs = [...document.querySelectorAll('[data-testid=views] img')];
  return imgs.reduce((a, b) => (a.width * a.height >= b.width * b.height ? a : b));
}"""


def now(page) -> float:
    return page.evaluate("() => performance.now()")


def wait_value(page, script: str, args, timeout_s: float = WAIT_MS / 1000) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = page.evaluate(script, args)
        if value is not None:
            return value
        time.sleep(0.01)
    frames = page.evaluate("() => window.__frames.map((f) => [Math.round(f.t), f.ready, f.grey])")
    page.screenshot(path=str(REPO / "var" / "bench" / "web-timeout.png"))
    raise TimeoutError(f"no frame came after {args}: frames {frames[-10:]}; the task says {state(page)['task']}")


def state(page) -> dict:
    return page.evaluate("() => JSON.parse(JSON.stringify(window.trame.state.state))")


def wait_state(page, condition, what: str) -> dict:
    deadline = time.monotonic() + WAIT_MS / 1000
    while time.monotonic() < deadline:
        found = state(page)
        if condition(found):
            return found
        time.sleep(0.05)
    raise TimeoutError(f"{what}: {state(page).get('task', {}).get('message')}")


def claim(page) -> float:
    """Next case, until the case is editable on screen; seconds."""
    wait_state(page, lambda s: s["task"]["actions"]["next_task"]["enabled"], "Next case on")
    start = now(page)
    page.get_by_test_id("task-next-task").click()
    shown = wait_value(page, SHOWN_JS, [start, 5])
    wait_state(page, lambda s: s["task"]["task"] and s["protocol"]["rows"], "the case")
    return (shown - start) / 1000


def release(page) -> None:
    page.get_by_test_id("task-release").click()
    page.get_by_test_id("release-confirm").click()
    wait_state(page, lambda s: s["task"]["task"] is None, "released")


def stroke(page, offset: float) -> tuple[float, float]:
    """A Paint stroke across the axial view; (press → first frame, release → first frame) in seconds."""
    page.get_by_test_id("effect-paint").click()
    box = page.evaluate(f"() => ({AXIAL_JS})().getBoundingClientRect().toJSON()")
    x0, y = box["x"] + box["width"] * 0.35, box["y"] + box["height"] * (0.45 + offset)
    page.mouse.move(x0, y)
    pressed = now(page)
    page.mouse.down()
    page.mouse.move(x0 + 3, y)
    first = wait_value(page, NEXT_FRAME_JS, [pressed])
    for step in range(1, 16):
        page.mouse.move(x0 + box["width"] * 0.2 * step / 15, y)
        time.sleep(0.02)
    released = now(page)
    page.mouse.up()
    shown = wait_value(page, NEXT_FRAME_JS, [released])
    return (first - pressed) / 1000, (shown - released) / 1000


def run(datasets: dict, repeats: int, work: Path) -> dict:
    from playwright.sync_api import sync_playwright

    data_dir = work / "server"
    token = create_site_admin(data_dir, None)
    server = ServerProcess(data_dir, None, None, "--log-level", "warning").start()
    results = {}
    try:
        admin = Api(server.url, token, "admin")
        reader = admin.new_user("reader")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
            for key, dataset in datasets.items():
                project = admin.new_project(f"bench-{key}", PROTOCOL_ID, readers=1, review=False)
                admin.set_roles(project, "reader", "annotator")
                dataset["case"] = upload(admin, project, dataset)
                app = WebApp(reader.token, server.url, work / f"app-{key}", {"project_id": project})
                rows = {"claim_s": [], "press_s": [], "stroke_s": [], "load": [], "app_ready_s": app.started_s}
                try:
                    page = browser.new_context(viewport=VIEWPORT).new_page()
                    page.goto(app.url)
                    page.get_by_test_id("task-connection").wait_for(timeout=WAIT_MS)
                    page.evaluate(FRAMES_JS)
                    wait_state(page, lambda s: s["task"]["project_id"] == project, "signed in")  # noqa: B023
                    claim(page)  # untimed: the app's first case
                    release(page)
                    for repeat in range(repeats):
                        rows["load"].append(os.getloadavg()[0])
                        rows["claim_s"].append(claim(page))
                        wait_state(page, lambda s: s["protocol"]["selected"], "a structure selected")
                        press, shown = stroke(page, 0.02 * repeat)
                        rows["press_s"].append(press)
                        rows["stroke_s"].append(shown)
                        print(
                            f"{key} {repeat + 1}/{repeats}: claim {rows['claim_s'][-1]:.2f} s, stroke "
                            f"{shown * 1000:.0f} ms (press {press * 1000:.0f} ms)",
                            flush=True,
                        )
                        release(page)
                    rows["rss_mib"] = psutil.Process(app.process.pid).memory_info().rss / 2**20
                    page.context.close()
                finally:
                    app.stop()
                results[key] = rows
            browser.close()
        admin.close()
    finally:
        server.stop()
    return results


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "?"


def section(datasets: dict, results: dict, args, minutes: float) -> str:
    median = statistics.median
    lines = [
        SECTION,
        "",
        f"Measured on {datetime.date.today().isoformat()} by `bench/web.py` (`.venv/bin/python -m bench.web "
        f"--repeats {args.repeats}`): the browser annotator (`Web/`, trame-slicer {_version('trame-slicer')}) in "
        f"Debian's Chromium driven by Playwright, one app process per dataset, against `medannot serve` on "
        f"loopback. Median of {args.repeats} runs (min–max).",
        "",
        f"- Machine: {platform.processor() or platform.machine()}, {psutil.cpu_count()} logical cores, "
        f"{psutil.virtual_memory().total / 2**30:.1f} GiB RAM, {platform.system()}, Python "
        f"{platform.python_version()}; views rendered on the CPU (Mesa llvmpipe through EGL), no GPU.",
    ]
    if args.note:
        lines.append(f"- **{args.note}**")
    lines += [
        f"- Versions: our code at `{_git('rev-parse', '--short', 'HEAD')}`; slicer-core {_version('slicer-core')}, "
        f"vtk {_version('vtk')}, trame {_version('trame')}, trame-rca {_version('trame-rca')}, Chromium "
        f"{_chromium()}.",
        f"- Protocol `{PROTOCOL_ID}` (14 structures, 13 proposed by the AI file). Server: SQLite, one process.",
        "",
        "| case | claim → editable case on screen, s | goal | brush stroke → updated view, ms | goal | "
        "press → first brush frame, ms | app ready, s | app memory, MiB | load (1 min) |",
        "|---|---:|---|---:|---|---:|---:|---:|---:|",
    ]
    for key, rows in results.items():
        dataset = datasets[key]
        claim, shown, press = rows["claim_s"], rows["stroke_s"], rows["press_s"]
        stroke_goal = "≤ 150 ms: **met**" if median(shown) <= 0.150 else "≤ 150 ms: **not met**"
        if key != "series":
            stroke_goal = "-"
        goal = dataset["goal_s"]
        claim_goal = f"≤ {goal:g} s: **{'met' if median(claim) <= goal else 'not met'}**"
        lines.append(
            f"| {dataset['voxels']} ({dataset['title']}) | {median(claim):.2f} ({min(claim):.2f}–{max(claim):.2f}) "
            f"| {claim_goal} | {median(shown) * 1000:.0f} ({min(shown) * 1000:.0f}–{max(shown) * 1000:.0f}) "
            f"| {stroke_goal} | {median(press) * 1000:.0f} | {rows['app_ready_s']:.1f} | {rows['rss_mib']:.0f} "
            f"| {min(rows['load']):.1f}–{max(rows['load']):.1f} |"
        )
    lines += [
        "",
        "Notes:",
        "- Claim → editable: the click on Next case to the first frame of the axial view showing the CT, with the "
        "editor's toolbar and the protocol table on the page (download, Slicer's reader, the AI file, the "
        "protocol's segments, the first rule check, the views' first render and its trip to the browser). "
        "`bench/client.py` times the same claim without the browser (the case in the scene).",
        "- Brush stroke → updated view: from the mouse release to the first new frame of the axial view "
        "(rendered on the server, encoded, sent, decoded in the page). The brush paints while it moves, so that "
        "frame holds the stroke; the slowest runs are a case's first stroke (the paint pipeline is built).",
        "- Before `503be44` the case opened with the volume rendering on in the 3-D view (now Show in 3-D, off "
        "at first as in Slicer): claim → on screen 2.94 s and 8.15 s (2 runs each, load 3.4–5.4).",
        "- App ready: process start to its ready line (imports, the scene, the views). App memory: the app's "
        "resident set after the runs, one user's case open and closed.",
        f"- Whole run: {minutes:.1f} min. Raw figures: `var/bench/web.json`.",
    ]
    return "\n".join(lines) + "\n"


def _chromium() -> str:
    import subprocess

    try:
        words = subprocess.run([str(CHROMIUM), "--version"], capture_output=True, text=True, timeout=30).stdout
        return words.split()[1]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "?"


def main(argv=None) -> None:
    claim_bench_main("web", __doc__.splitlines()[0], "runs per case", prepare, run, section, argv)


if __name__ == "__main__":
    sys.exit(main())
