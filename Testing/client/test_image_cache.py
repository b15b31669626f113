"""The content-addressed image cache: hash checked, size bounded (least recently used first), atomic."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from MedAnnotAssistLib.core.image_cache import ImageCache, suffix_of
from MedAnnotAssistLib.core.jobs import CancelledError
from MedAnnotAssistLib.core.queue_errors import CorruptDownload


def _writer(content: bytes, filename: str = "case.nii.gz", calls: list | None = None):
    """A stand-in for ``QueueClient.download_image``: writes the bytes, answers like a Download."""

    def download(into: Path):
        if calls is not None:
            calls.append(into)
        into.write_bytes(content)
        return SimpleNamespace(sha256=hashlib.sha256(content).hexdigest(), filename=filename)

    return download


def _sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def test_a_file_is_kept_by_content_and_fetched_once(tmp_path):
    cache = ImageCache(tmp_path / "cache")
    content, calls = b"image bytes" * 100, []
    path = cache.fetch(_sha(content), _writer(content, calls=calls))
    assert path == tmp_path / "cache" / _sha(content)[:2] / f"{_sha(content)}.nii.gz"
    assert path.read_bytes() == content and len(calls) == 1
    assert cache.fetch(_sha(content), _writer(content, calls=calls)) == path and len(calls) == 1
    assert cache.path(_sha(content)) == path and cache.size_bytes() == len(content)
    assert list((tmp_path / "cache" / "tmp").iterdir()) == []


def test_bytes_that_are_not_the_named_content_are_never_kept(tmp_path):
    cache = ImageCache(tmp_path / "cache")
    expected = _sha(b"what the server lists")
    with pytest.raises(CorruptDownload, match=f"not {expected} as the server lists it"):
        cache.fetch(expected, _writer(b"what a proxy changed"))
    assert cache.path(expected) is None and cache.entries() == []
    assert list((tmp_path / "cache" / "tmp").iterdir()) == []


def test_a_cancelled_download_leaves_nothing(tmp_path):
    cache = ImageCache(tmp_path / "cache")

    def cancelled(into: Path):
        into.write_bytes(b"half")
        raise CancelledError("the download was cancelled")

    with pytest.raises(CancelledError):
        cache.fetch(_sha(b"whole"), cancelled)
    assert cache.entries() == [] and list((tmp_path / "cache" / "tmp").iterdir()) == []


def test_the_least_recently_used_go_first_and_the_pinned_stay(tmp_path):
    cache = ImageCache(tmp_path / "cache", max_bytes=250)
    contents = [bytes([n]) * 100 for n in range(4)]
    paths = []
    for age, content in enumerate(contents[:2]):
        paths.append(cache.fetch(_sha(content), _writer(content)))
        os.utime(paths[-1], (1000 + age, 1000 + age))  # 0 older than 1
    cache.path(_sha(contents[0]))  # a use: 0 is now the most recent
    paths.append(cache.fetch(_sha(contents[2]), _writer(contents[2])))
    assert [p.exists() for p in paths] == [True, False, True]  # 1 was the least recently used
    cache.pinned.add(_sha(contents[0]))  # the open case's image
    os.utime(paths[0], (1, 1))
    cache.fetch(_sha(contents[3]), _writer(contents[3]))
    assert paths[0].exists() and not paths[2].exists() and cache.size_bytes() == 200


def test_one_file_larger_than_the_bound_is_still_served(tmp_path):
    cache = ImageCache(tmp_path / "cache", max_bytes=10)
    content = b"x" * 50
    assert cache.fetch(_sha(content), _writer(content)).read_bytes() == content


def test_settings_and_names_are_checked(tmp_path):
    with pytest.raises(ValueError, match="max_bytes must be positive"):
        ImageCache(tmp_path, max_bytes=0)
    with pytest.raises(ValueError, match="expected a SHA-256 in hex"):
        ImageCache(tmp_path).path("../../etc/passwd")
    assert suffix_of("Case-1.NII.GZ") == ".nii.gz" and suffix_of("a-ai.seg.nrrd") == ".seg.nrrd"
    assert suffix_of("report") == ""
