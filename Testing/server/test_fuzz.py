"""Schemathesis fuzzes every operation of the OpenAPI document, with a site admin's token, against the
real server: a bounded, seeded run in which no answer may be a 5xx."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .harness import tiny_segmentation

SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")


@pytest.mark.slow
def test_no_server_errors_under_fuzzing(queue, tiny_image_file, tmp_path):
    admin = queue.admin
    # real objects with small ids, so generated ids sometimes reach the code behind the 404s
    project = admin.new_project("fuzz", readers=2)
    reader = admin.new_user("fuzz-reader")
    admin.set_roles(project, "fuzz-reader", "annotator")
    admin.set_roles(project, "admin", "annotator", "reviewer", "admin")
    admin.upload_case(project, tiny_image_file, "fuzz-case")
    task = reader.claim(project)
    assert reader.submit(project, task, tiny_segmentation(tmp_path / "r.seg.nrrd")).status_code == 201
    admin.claim(project)
    command = [
        SCHEMATHESIS, "run", f"{queue.url}/openapi.json",
        "--header", f"Authorization: Bearer {queue.admin_token}",
        "--checks", "not_a_server_error",
        "--phases", "examples,coverage,fuzzing",
        "--max-examples", "10",
        "--seed", "20260101",
        "--workers", "1",
        "--suppress-health-check", "all",
        "--request-timeout", "60",
        # revoking the fuzzer's own token would turn the rest of the run into 401s
        "--exclude-path", "/api/v1/me/tokens/{token_id}",
        "--report-dir", str(tmp_path / "report"),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert queue.server.alive()
    assert "Authentication failed" not in result.stdout, result.stdout[-3000:]
    summary = [line for line in result.stdout.splitlines() if "generated" in line]
    print(f"\n{queue.backend}: {summary[-1].strip() if summary else result.stdout[-300:]}")
