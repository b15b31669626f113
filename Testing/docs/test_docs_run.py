"""Every shell and Python block of README.md and docs/*.md runs, as a new user would run it.

Each page runs in a fresh workspace (see ``runner``): the checkout's files, ``.venv`` and the sample scans that
``medannot sample-data`` would fetch. A block that cannot run here is marked ``skip`` with the reason.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from Testing.docs.runner import PAGES, REPO, blocks, failing_block, run_page
from Testing.sample_cache import link_sample_cache

pytestmark = pytest.mark.slow

RUNNABLE_PAGES = [page for page in PAGES if any(block.runs for block in blocks(page))]
_COMMAND_START = re.compile(r"^\s*(\.venv/bin/|medannot |curl |make |python3? )", re.M)


@pytest.fixture(scope="session")
def sample_cache(tmp_path_factory, sample_dir) -> Path:
    """``var/sample-data`` as ``medannot sample-data`` leaves it (files and manifest), from ../shared."""
    return link_sample_cache(tmp_path_factory.mktemp("doc-sample-data"), sample_dir)


def _workspace(root: Path, cache: Path) -> tuple[Path, dict[str, str]]:
    """A checkout as a new user has it: the repository's files (linked), its .venv, and a fresh ``var/``
    holding only what ``medannot sample-data`` fetches."""
    workspace = root / "workspace"
    (workspace / "var").mkdir(parents=True)
    for entry in REPO.iterdir():
        if entry.name not in ("var", ".git") and not entry.name.endswith("_cache"):
            (workspace / entry.name).symlink_to(entry)
    shutil.copytree(cache, workspace / "var" / "sample-data", symlinks=True)
    home = root / "home"
    home.mkdir()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("MEDANNOT_") and key not in ("VIRTUAL_ENV", "PYTHONHOME")
    }
    # a new user's shell: the venv is not activated, so a bare `medannot` in a page fails here too
    venv_bin = str(REPO / ".venv" / "bin")
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p and p != venv_bin)
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), PYTHONDONTWRITEBYTECODE="1")
    return workspace, env


# what some pages must print, beyond running: the outcome they promise
PROMISED = {
    # the task session on the sample CT: the states and the right lung's history it prints
    "docs/architecture.md": [
        "var/session/chest-1.seg.nrrd {'lung_left': 'accepted', 'lung_right': 'refined', 'nodule': 'absent'}",
        "['proposed', 'edited', 'override', 'final']",
    ],
    # the whole reading study: refusal and override, blinding, consensus job, return round, approvals, export, audit
    "docs/queue-api.md": [
        '{"code":"protocol_rules_failed","failures":["Pancreas: volume 17.4 ml, expected 20-200 ml"',
        '{"reader":"carol","case_id":2,"case_complete":true}',
        '{"code":"blinded"',
        '{"state":"done","attempts":1,',
        '{"case_state":"annotating","round":2,"returned_to":["carol"]}',
        '{"case_id":1,"round":2,"comment":"right kidney: remove the island below the liver"}',
        '{"case_id":2,"case_state":"approved"}',
        '{"case_id":1,"case_state":"approved","round":2}',
        '"cases":2,"download":"/api/v1/projects/',
        "labelsTr/abdomen-1.nii.gz",
        "labelsTr/abdomen-2.nii.gz",
        "audit chain ok",
    ],
    # the queue client: a refusal kept in the outbox, amended and delivered; offline detected, submission kept
    "docs/queue-client.md": [
        "failed protocol_rules_failed ['pancreas volumeMl', 'pancreas maxComponents']",
        "delivered as submission 1 ; waiting: 0",
        "Offline | http://127.0.0.1:9 does not answer (Connection refused)",
        "offline: True | still waiting: 1",
    ],
    # the workflow models: a reader's case from claim to delivered submission, through the panels' actions
    "docs/workflow.md": [
        "ct 1.2.0 proposed Left lung, Right lung",
        "{'Left lung': 'accepted', 'Right lung': 'accepted', 'Index nodule': 'absent'} | Submit on: True",
        "chest-1: submitted (submission 1) | waiting in the outbox: 0",
    ],
}


@pytest.mark.parametrize("page", RUNNABLE_PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_page_runs(page, tmp_path, sample_cache):
    workspace, env = _workspace(tmp_path, sample_cache)
    status, output = run_page(blocks(page), workspace, env)
    assert status == 0, f"{failing_block(output)} failed (exit {status}):\n{output[-6000:]}"
    missing = [text for text in PROMISED.get(str(page.relative_to(REPO)), []) if text not in output]
    assert missing == [], output[-6000:]


def test_every_skip_says_why():
    vague = [b.where for page in PAGES for b in blocks(page) if b.marker == "skip" and len(b.argument or "") < 15]
    assert vague == []


def test_markers_are_known():
    unknown = [
        f"{b.where}: {b.marker}"
        for page in PAGES
        for b in blocks(page)
        if b.marker not in (None, "skip", "background", "exit")
    ]
    assert unknown == []


def test_commands_are_in_runnable_blocks():
    """A block that shows commands is tagged sh, bash or python, so the runner cannot miss it."""
    untagged = [b.where for page in PAGES for b in blocks(page) if not b.language and _COMMAND_START.search(b.text)]
    assert untagged == []


def test_commands_name_the_venv():
    """`medannot` is not on PATH until the venv is activated: pages write `.venv/bin/medannot`."""
    bare = [
        f"{b.where}: {line.strip()}"
        for page in PAGES
        for b in blocks(page)
        if b.language in ("sh", "bash")
        for line in b.text.splitlines()
        if re.match(r"^\s*medannot\b", line) or re.search(r"[;&|(]\s*medannot\b", line)
    ]
    assert bare == []


def test_the_runner_reports_the_failing_block(tmp_path, sample_cache):
    page = tmp_path / "page.md"
    page.write_text(
        "```sh\nGREETING=hello\n```\n\n<!-- doc-test: exit 3 -->\n```sh\nexit 3\n```\n\n"
        "```python\nprint('python runs')\n```\n\n```sh\necho $GREETING\nfalse\n```\n"
    )
    workspace, env = _workspace(tmp_path, sample_cache)
    status, output = run_page(blocks(page), workspace, env)
    assert status != 0
    assert "python runs" in output and "hello" in output
    assert failing_block(output).endswith("page.md:14")


def test_readme_lists_what_make_run_writes(tmp_path, sample_cache):
    """The README's table of `make run`'s files is exactly what its command (`medannot run`) writes by `ready`."""
    import signal
    import subprocess

    from Testing.docs.runner import free_port

    text = (REPO / "README.md").read_text()
    table = text[text.index("| file in `var/demo/` |") :].split("\n\n", 1)[0]
    listed = {
        name.rstrip("/") for row in table.splitlines()[2:] for name in re.findall(r"`([^`]+)`", row.split("|")[1])
    }
    assert "medannot run --data-dir var" in (REPO / "Makefile").read_text()
    workspace, env = _workspace(tmp_path, sample_cache)
    command = [".venv/bin/medannot", "run", "--data-dir", "var", "--port", str(free_port())]
    command += ["--server-port", str(free_port())]
    process = subprocess.Popen(
        command, cwd=workspace, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    lines = []
    try:
        while (line := process.stdout.readline()) and line.strip() != "ready":  # EOF: it failed (stderr says why)
            lines.append(line)
    finally:
        process.send_signal(signal.SIGTERM)
        status = process.wait(120)
    assert status == 0, process.stderr.read()[-3000:]
    written = {path.name for path in (workspace / "var" / "demo").iterdir()}
    assert listed == written, lines
