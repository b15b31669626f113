"""Shared fixtures. In CI (CI=true) a skipped test is a failure: a missing component must not pass silently."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODULE_DIR = REPO / "MedAnnotAssist"
SHARED_DATA = Path(os.environ.get("MEDANNOT_SHARED_DATA", REPO.parent / "shared" / "data" / "totalseg-example"))
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which counts as a failure: {report.longrepr}"


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The real CT/MR sample data in ../shared (see its README)."""
    if not (SHARED_DATA / "example_ct_sm.nii.gz").is_file():
        pytest.skip(f"sample data not found in {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def total_labels(sample_dir) -> dict[int, str]:
    """TotalSegmentator label value -> name, as in labels_total.json."""
    return {int(k): v for k, v in json.loads((sample_dir / "labels_total.json").read_text()).items()}
