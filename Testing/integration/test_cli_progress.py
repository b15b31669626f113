"""Progress bars on stderr for the commands that take a while (`consensus`, `prepare`, `dicom-import`), off with -q;
stdout keeps only the results."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

MEDANNOT = [str(Path(sys.executable).parent / "medannot")]
BAR = re.compile(r"^(?P<label>[a-z-]+) \[[#.]{30}\] +(?P<percent>\d+\.\d)% ")


def run(*args):
    return subprocess.run([*MEDANNOT, *map(str, args)], capture_output=True, text=True, timeout=300)


def bar_updates(stderr: str, label: str) -> list[float]:
    """The percentages a bar showed, in order (each update is drawn over the last one with a carriage return)."""
    updates = []
    for line in re.split(r"[\r\n]", stderr):
        found = BAR.match(line)
        if found and found["label"] == label:
            updates.append(float(found["percent"]))
    return updates


def commands(sample_dir, tmp_path):
    ct, seg, fast = (sample_dir / f"{n}.nii.gz" for n in ("example_ct_sm", "example_seg", "example_seg_fast"))
    names = sample_dir / "labels_total.json"
    return {
        "prepare": ("prepare", ct, "--protocol", "abdominal-organs", "--out", tmp_path / "case",
                    "--labels", seg, "--labels-json", names),
        "consensus": ("consensus", seg, fast, "--protocol", "abdominal-organs", "--labels-json", names,
                      "--out", tmp_path / "consensus"),
        "dicom-import": ("dicom-import", sample_dir / "example_ct_dicom", tmp_path / "ct.nrrd"),
    }  # fmt: skip


@pytest.mark.parametrize("label", ["prepare", "consensus", "dicom-import"])
def test_a_progress_bar_runs_to_the_end_and_quiet_turns_it_off(sample_dir, tmp_path, label):
    command = commands(sample_dir, tmp_path)[label]
    result = run(*command)
    assert result.returncode == 0, result.stderr
    updates = bar_updates(result.stderr, label)
    assert len(updates) >= 3 and updates == sorted(updates) and updates[-1] == 100.0, result.stderr
    assert bar_updates(result.stdout, label) == [] and "\r" not in result.stdout  # stdout holds the results only
    quiet = run(*command, "-q")
    assert quiet.returncode == 0, quiet.stderr
    assert bar_updates(quiet.stderr, label) == []
