"""Downloaded images kept by content: ``<folder>/<sha[:2]>/<sha256><suffix>``, bounded in size.

The queue names every image and AI segmentation by its SHA-256 (``case["image_sha256"]``,
``case["ai_segmentation"]``), so a file here is the file on the server, whatever case or project uses it:
reopening a case, or one prefetched while the previous case was read, costs no download. A download is
written to a temporary file, its hash checked against the name it will have, then renamed: the cache never
holds a partial or altered file. When the total passes ``max_bytes`` the least recently used files go
(using a file counts as a use); the one just fetched and those ``pinned`` (the open case's) stay.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from .queue_errors import CorruptDownload
from .user_settings import cache_folder

DEFAULT_MAX_BYTES = 8 << 30
SHA256 = re.compile(r"^[0-9a-f]{64}$")
STALE_TEMPORARY_S = 24 * 3600
KNOWN_SUFFIXES = (".seg.nrrd", ".nii.gz", ".nrrd", ".nii", ".mha", ".nhdr")


def suffix_of(name: str) -> str:
    """The format suffix of a file name (``.nii.gz``, ``.seg.nrrd``, ...), '' when unknown."""
    lowered = name.lower()
    return next((suffix for suffix in KNOWN_SUFFIXES if lowered.endswith(suffix)), "")


class ImageCache:
    """``folder``: default ``images/`` in the user's cache folder (``user_settings.cache_folder()``)."""

    def __init__(self, folder: Path | None = None, max_bytes: int = DEFAULT_MAX_BYTES):
        if max_bytes <= 0:
            raise ValueError(f"image cache {folder}: max_bytes must be positive, got {max_bytes}")
        self.folder = Path(folder) if folder is not None else cache_folder() / "images"
        self.max_bytes = int(max_bytes)
        self.pinned: set[str] = set()
        self._temporary = self.folder / "tmp"
        self._temporary.mkdir(parents=True, exist_ok=True)
        self._drop_stale_temporaries()

    def path(self, sha256: str) -> Path | None:
        """The cached file of that content, or None; finding it counts as a use."""
        sha256 = _checked(sha256)
        shard = self.folder / sha256[:2]
        found = next((p for p in shard.glob(f"{sha256}*") if p.is_file()), None) if shard.is_dir() else None
        if found is not None:
            try:
                os.utime(found)
            except FileNotFoundError:  # evicted by another process just now
                return None
        return found

    def fetch(self, sha256: str, download: Callable[[Path], object]) -> Path:
        """The cached file of ``sha256``, downloading it when missing: ``download(temporary_path)`` writes the
        file and returns what the queue client's downloads return (``.sha256`` and ``.filename``, whose suffix
        the cached file keeps). ``CorruptDownload`` when the bytes are not those named (nothing is kept)."""
        found = self.path(sha256)
        if found is not None:
            return found
        temporary = self._temporary / f"{uuid.uuid4().hex}.part"
        try:
            done = download(temporary)
            actual = getattr(done, "sha256", None) or _hash(temporary)
            if actual != sha256:
                raise CorruptDownload(
                    f"the downloaded file's SHA-256 is {actual}, not {sha256} as the server lists it: "
                    "a proxy or the disk altered it; try again",
                    code="corrupt_download",
                )
            name = getattr(done, "filename", "") or ""
            final = self.folder / sha256[:2] / f"{sha256}{suffix_of(name)}"
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(temporary, final)
        finally:
            temporary.unlink(missing_ok=True)
        self.evict(keep={sha256})
        return final

    def entries(self) -> list[tuple[Path, int, float]]:
        """(path, bytes, last use) of every cached file, least recently used first."""
        found = []
        for path in self.folder.glob("??/*"):
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            if path.is_file() and SHA256.match(path.name[:64]):
                found.append((path, stat.st_size, stat.st_mtime))
        return sorted(found, key=lambda entry: entry[2])

    def size_bytes(self) -> int:
        return sum(size for _path, size, _used in self.entries())

    def evict(self, keep: set[str] = frozenset()) -> list[Path]:
        """Remove the least recently used files until the cache fits ``max_bytes``; the removed paths."""
        entries = self.entries()
        total = sum(size for _path, size, _used in entries)
        removed = []
        for path, size, _used in entries:
            if total <= self.max_bytes:
                break
            if path.name[:64] in keep or path.name[:64] in self.pinned:
                continue
            path.unlink(missing_ok=True)
            removed.append(path)
            total -= size
        return removed

    def clear(self) -> None:
        for path, _size, _used in self.entries():
            path.unlink(missing_ok=True)

    def _drop_stale_temporaries(self) -> None:
        """Partial downloads of a process that died long ago (a live one's are younger)."""
        cutoff = time.time() - STALE_TEMPORARY_S
        for path in self._temporary.glob("*.part"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
            except FileNotFoundError:
                pass


def _checked(sha256: str) -> str:
    if not isinstance(sha256, str) or not SHA256.match(sha256):
        raise ValueError(f"image cache: expected a SHA-256 in hex (64 characters 0-9a-f), got {sha256!r}")
    return sha256


def _hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
