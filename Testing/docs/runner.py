"""Run the shell and Python blocks of a Markdown page, in order, in a fresh workspace.

A page's runnable blocks are its fences tagged ``sh``, ``bash`` or ``python``. They run one after the
other in one bash script (shell variables carry from block to block; each Python block is its own
``.venv/bin/python`` process), from a new folder that looks like a fresh checkout: links to the
repository's files and ``.venv``, and a new ``var/`` holding only the sample scans that
``medannot sample-data`` fetches. So a page can only use what it creates or fetches itself, exactly as a
new user would.

An HTML comment on the line before a fence changes how it runs (invisible on the rendered page):

- ``<!-- doc-test: skip: WHY -->``: not run; the reason is required (``test_every_skip_says_why``).
- ``<!-- doc-test: background -->``: the block is started in the background (a server) and the runner
  waits until ``http://127.0.0.1:PORT/api/v1/health`` answers; it is stopped when the page ends.
- ``<!-- doc-test: exit N -->``: the block must end with exit status N (a refusal the page shows).

The one rewrite: the port 8000 that the pages use becomes a free port (in URLs, ``--port`` and
``MEDANNOT_PORT``), so a test never meets a server that happens to run on this machine.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import socket
import subprocess
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
RUNNABLE = {"sh", "bash", "python"}
_FENCE = re.compile(r"^```(\S*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
_MARKER = re.compile(r"<!--\s*doc-test:\s*([a-z-]+)\s*:?\s*(.*?)\s*-->\s*$")
DOC_PORT = "8000"


@dataclass
class Block:
    page: Path
    line: int
    language: str
    text: str
    marker: str | None = None
    argument: str | None = None

    @property
    def where(self) -> str:
        page = self.page.relative_to(REPO) if self.page.is_relative_to(REPO) else self.page
        return f"{page}:{self.line}"

    @property
    def runs(self) -> bool:
        return self.language in RUNNABLE and self.marker != "skip"


def blocks(page: Path) -> list[Block]:
    """Every fenced block of a page, with the doc-test marker on the line before it, if any."""
    text = page.read_text(encoding="utf-8")
    found = []
    for match in _FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = _MARKER.search(before)
        found.append(
            Block(
                page,
                line,
                match.group(1).lower(),
                match.group(2),
                marker.group(1) if marker else None,
                marker.group(2) if marker else None,
            )
        )
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _python(block: Block) -> str:
    delimiter = "MEDANNOT_DOC_PYTHON"
    return f".venv/bin/python - <<'{delimiter}'\n{block.text}{delimiter}\n"


def script(page_blocks: list[Block], port: int) -> str:
    """One bash script running a page's blocks in order; each announces itself on stderr first."""
    parts = [
        "set -euo pipefail",
        f"export MEDANNOT_PORT={port}",  # `medannot serve` without --port listens where the page's URLs now point
        "MEDANNOT_DOC_BACKGROUND=()",
        # a background block runs in its own process group: stop the whole group (uvicorn's workers too)
        'trap \'for pid in "${MEDANNOT_DOC_BACKGROUND[@]}"; do kill -TERM -- -"$pid" 2>/dev/null || true; done\' EXIT',
    ]
    for block in page_blocks:
        if not block.runs:
            continue
        body = _python(block) if block.language == "python" else block.text
        body = body.replace(f"127.0.0.1:{DOC_PORT}", f"127.0.0.1:{port}").replace(
            f"--port {DOC_PORT}", f"--port {port}"
        )
        parts.append(f"echo {shlex.quote('>>> ' + block.where)} >&2")
        if block.marker == "background":
            log = f"background-{block.line}.log"
            parts.append(f"setsid bash -c {shlex.quote(body)} > {log} 2>&1 &")
            parts.append("MEDANNOT_DOC_BACKGROUND+=($!)")
            parts.append(
                textwrap.dedent(f"""\
                for _ in $(seq 1 240); do
                  curl -sf http://127.0.0.1:{port}/api/v1/health > /dev/null && break
                  kill -0 "$!" 2>/dev/null || {{ cat {log} >&2; echo "background block stopped" >&2; exit 97; }}
                  sleep 0.25
                done
                curl -sf http://127.0.0.1:{port}/api/v1/health > /dev/null || {{ cat {log} >&2; exit 98; }}""")
            )
        elif block.marker == "exit":
            expected = int(block.argument or "1")
            parts.append(
                f"set +e\n( {body.rstrip()}\n)\nmedannot_rc=$?\nset -e\n"
                f'[ "$medannot_rc" -eq {expected} ] || {{ echo "exit $medannot_rc, the page says {expected}" >&2; '
                "exit 96; }"
            )
        else:
            parts.append(body)
    return "\n".join(parts) + "\n"


def run_page(page_blocks: list[Block], workspace: Path, env: dict[str, str], timeout: float = 900):
    """Run the page's blocks in ``workspace``; returns (exit status, combined output). Whatever a page
    left running (a server started with ``&``) is stopped with the page's process group."""
    port = free_port()
    path = workspace / "page.sh"
    path.write_text(script(page_blocks, port))
    log = workspace / "page.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            ["bash", str(path)], cwd=workspace, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            status = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            status = -1
        finally:
            _stop_group(process.pid, signal.SIGKILL if status == -1 else signal.SIGTERM)
            process.wait()
    output = log.read_text(errors="replace")
    return status, output + (f"\n(timed out after {timeout} s)" if status == -1 else "")


def _stop_group(group: int, first: signal.Signals, grace: float = 15.0) -> None:
    """Signal a process group and wait until it is gone (a server frees its port), killing it after ``grace``."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, first)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            os.killpg(group, 0)
            time.sleep(0.1)
        os.killpg(group, signal.SIGKILL)


def failing_block(output: str) -> str:
    """The page location of the last block that started (the one that failed)."""
    started = re.findall(r"^>>> (\S+)$", output, re.M)
    return started[-1] if started else "(before the first block)"
