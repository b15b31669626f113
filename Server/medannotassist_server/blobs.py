"""The content-addressed blob store: a file is named by its SHA-256, written once and never changed.

A write is durable before it is referenced: the bytes go to a temporary file in the store, which is
fsynced, renamed into place and its directory fsynced; only then does the caller commit the row that
points to it. A process killed at any moment leaves either no file or a complete one (stray temporary
files older than an hour are removed on start).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

CHUNK = 1024 * 1024
SUFFIXES = (".seg.nrrd", ".nrrd", ".nii.gz", ".nii", ".json", ".html", ".zip")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class BlobStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.tmp = self.root / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str, suffix: str) -> Path:
        if not _SHA256.match(sha256) or suffix not in SUFFIXES:
            raise ValueError(f"not a blob name: {sha256}{suffix}")
        return self.root / sha256[:2] / f"{sha256}{suffix}"

    def find(self, sha256: str) -> Path | None:
        """The stored file of a hash, whatever its suffix."""
        for suffix in SUFFIXES:
            candidate = self.path(sha256, suffix)
            if candidate.is_file():
                return candidate
        return None

    def temporary(self, suffix: str) -> Path:
        """A new empty file inside the store (same file system, so adopting it is a rename)."""
        handle, name = tempfile.mkstemp(dir=self.tmp, prefix="upload-", suffix=suffix)
        os.close(handle)
        return Path(name)

    def write_stream(self, chunks: Iterable[bytes], suffix: str, limit: int | None = None) -> tuple[Path, str, int]:
        """Copy ``chunks`` into a temporary file; return (path, sha256, size). ValueError past ``limit``."""
        path = self.temporary(suffix)
        digest, size = hashlib.sha256(), 0
        try:
            with open(path, "wb") as out:
                for chunk in chunks:
                    size += len(chunk)
                    if limit is not None and size > limit:
                        raise ValueError(f"larger than the limit of {limit} bytes")
                    digest.update(chunk)
                    out.write(chunk)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return path, digest.hexdigest(), size

    def adopt(self, temporary: Path, sha256: str, suffix: str) -> Path:
        """Make a temporary file the durable blob ``sha256``; the temporary file is consumed."""
        final = self.path(sha256, suffix)
        if final.is_file() and final.stat().st_size == temporary.stat().st_size:
            temporary.unlink(missing_ok=True)  # the same content is already stored
            return final
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        final.parent.mkdir(parents=True, exist_ok=True)
        _fsync_dir(self.root)
        os.replace(temporary, final)
        _fsync_dir(final.parent)
        return final

    def put_bytes(self, data: bytes, suffix: str) -> tuple[str, Path]:
        path, sha256, _ = self.write_stream([data], suffix)
        return sha256, self.adopt(path, sha256, suffix)

    def put_file(self, source: Path, suffix: str) -> tuple[str, Path]:
        """Copy a file the server wrote elsewhere (consensus, exports) into the store."""
        with open(source, "rb") as handle:
            path, sha256, _ = self.write_stream(iter(lambda: handle.read(CHUNK), b""), suffix)
        return sha256, self.adopt(path, sha256, suffix)

    def clean_temporary(self, older_than_s: float = 3600.0) -> int:
        """Remove uploads and work folders (DICOM unpacking, review finals) a killed process left behind (old
        ones only: a replica may be writing now)."""
        removed, cutoff = 0, time.time() - older_than_s
        for pattern in ("upload-*", "dicom-*", "final-*"):
            for stray in self.tmp.glob(pattern):
                try:
                    if stray.lstat().st_mtime >= cutoff:
                        continue
                    if stray.is_dir() and not stray.is_symlink():
                        shutil.rmtree(stray)
                    else:
                        stray.unlink()
                    removed += 1
                except FileNotFoundError:
                    pass
        return removed


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    handle = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)
