"""Shared by the SEG and RTSTRUCT tests: the real CT series with TotalSegmentator's labels on it, dciodvfy."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from MedAnnotAssistLib.core.labelio import Geometry, ReaderLabels
from MedAnnotAssistLib.core.protocol import Protocol, bundled_protocol
from Testing.readers import ABDOMEN_LABELS


@cache
def ct_series(sample_dir: Path):
    """The 20-slice JPEG 2000 CT series (read once per test session)."""
    from MedAnnotAssistLib.core.dicom.series import read_series

    return read_series(sample_dir / "example_ct_dicom")


@cache
def abdomen_protocol() -> Protocol:
    return bundled_protocol("abdominal-organs")


@cache
def ct_labels(sample_dir: Path) -> tuple[ReaderLabels, dict]:
    """TotalSegmentator's labels of the series (y-flipped in the NIfTI) on the series grid, and no tags."""
    from MedAnnotAssistLib.core.dicom.seg import labels_for_series

    return labels_for_series(
        sample_dir / "example_seg_dicom.nii.gz", ct_series(sample_dir), abdomen_protocol(), ABDOMEN_LABELS
    )


def dciodvfy(path: Path) -> tuple[list[str], list[str]]:
    """(errors, warnings) that dicom3tools' dciodvfy reports for a file. Without dciodvfy the test is skipped,
    which fails in CI."""
    tool = shutil.which("dciodvfy")
    if tool is None:
        pytest.skip("dciodvfy (Debian package dicom3tools) is not on PATH")
    run = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=120)
    lines = [line.strip() for line in (run.stdout + run.stderr).splitlines() if line.strip()]
    return [x for x in lines if x.startswith("Error")], [x for x in lines if x.startswith("Warning")]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    return 1.0 if total == 0 else 2.0 * int(np.count_nonzero(a & b)) / total


def labels_from_masks(masks: dict[str, np.ndarray], geometry: Geometry) -> ReaderLabels:
    """One label layer holding each structure's mask (later masks win where they overlap)."""
    layer = np.zeros(next(iter(masks.values())).shape, np.uint8)
    segments = {}
    for value, (structure_id, mask) in enumerate(masks.items(), start=1):
        layer[mask] = value
        segments[structure_id] = (0, value)
    return ReaderLabels("synthetic", None, geometry, [layer], segments)


def hole_and_islands(shape: tuple[int, int, int]) -> np.ndarray:
    """A ring (square with a square hole) and two separate islands on a few slices."""
    mask = np.zeros(shape, bool)
    mask[5:9, 100:200, 100:200] = True
    mask[5:9, 130:170, 130:170] = False  # the hole
    mask[5:9, 300:340, 300:330] = True  # island one
    mask[6:8, 400:420, 50:90] = True  # island two, on two slices only
    return mask


def without_codes(protocol: Protocol, structure_id: str) -> Protocol:
    """The protocol with one structure's category code removed (as a hand-built protocol might have)."""
    structures = tuple(
        dataclasses.replace(s, terminology=dataclasses.replace(s.terminology, category=None))
        if s.id == structure_id
        else s
        for s in protocol.structures
    )
    return dataclasses.replace(protocol, structures=structures)


def with_other_series_uid(series, uid: str = "1.2.826.0.1.3680043.8.498.1234567890"):
    """The same slices presented as another series (as if the SEG's own series were not loaded)."""
    return dataclasses.replace(series, series_uid=uid)


def walk_elements(ds):
    """Every element of a dataset, depth first, into every item of every sequence."""
    for elem in ds:
        yield elem
        if elem.VR == "SQ":
            for item in elem.value or []:
                yield from walk_elements(item)
