"""Shared fixtures. In CI (CI=true) a skipped test is a failure: a missing component must not pass silently."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from Testing.readers import ABDOMEN_LABELS

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


@pytest.fixture(scope="session")
def real_readers(sample_dir):
    """(full labels, fast labels, spacing in array order, SimpleITK image of the full labels)."""
    import SimpleITK as sitk

    full = sitk.ReadImage(str(sample_dir / "example_seg.nii.gz"))
    fast = sitk.ReadImage(str(sample_dir / "example_seg_fast.nii.gz"))
    return sitk.GetArrayFromImage(full), sitk.GetArrayFromImage(fast), full.GetSpacing()[::-1], full


@pytest.fixture(scope="session")
def labels_json(tmp_path_factory):
    path = tmp_path_factory.mktemp("labels") / "abdomen-labels.json"
    path.write_text(json.dumps({str(k): v for k, v in ABDOMEN_LABELS.items()}))
    return path


@pytest.fixture(scope="session")
def liver_truth(real_readers) -> np.ndarray:
    return real_readers[0] == 5


@pytest.fixture
def context():
    """A fresh headless Slicer scene on PyPI slicer-core."""
    from MedAnnotAssistLib.mrml.scene import SceneContext

    return SceneContext.headless()
