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
    readers = [admin.new_user(name) for name in ("fuzz-reader", "fuzz-reader-2")]
    for reader in readers:
        admin.set_roles(project, reader.name, "annotator")
    # not an annotator: a case's readers are blind to it, and the fuzzer must reach what a reviewer sees
    admin.set_roles(project, "admin", "reviewer", "admin")
    admin.upload_case(project, tiny_image_file, "fuzz-case")
    for seed, reader in enumerate(readers):
        path = tiny_segmentation(tmp_path / f"r{seed}.seg.nrrd", seed=seed)
        assert reader.submit(project, reader.claim(project), path).status_code == 201
    assert admin.claim(project)["kind"] == "review"  # case 1 in review, with its consensus
    admin.upload_case(project, tiny_image_file, "fuzz-case-2")
    assert readers[0].claim(project) is not None
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
