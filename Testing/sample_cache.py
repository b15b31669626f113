"""A sample-data folder as ``medannot sample-data`` leaves it (files, series and manifest), linked to ../shared's
scans: the tests that run the product's commands never download them."""

from __future__ import annotations

from pathlib import Path

from MedAnnotAssistLib.core.sample_data import LABELS_FILE, SAMPLE_FILES, SAMPLE_SERIES, write_manifest


def link_sample_cache(cache: Path, sample_dir: Path) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    for name in [*SAMPLE_FILES, LABELS_FILE]:
        (cache / name).symlink_to(sample_dir / name)
    for folder in SAMPLE_SERIES:
        (cache / folder).mkdir()
        for path in (sample_dir / folder).iterdir():
            (cache / folder / path.name).symlink_to(path)
    write_manifest(cache)
    return cache
