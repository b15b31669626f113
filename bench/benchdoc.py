"""The one place where benchmark scripts write their section of docs/benchmarks.md."""

from __future__ import annotations

import re
from pathlib import Path


def replace_section(path: Path, section: str) -> None:
    """Put ``section`` (its first line is its "## " heading) where the section with that heading is in the
    markdown file at ``path``, or append it; the other sections are kept. The file is read right before it is
    written, since a benchmark runs for minutes and another may have written meanwhile."""
    heading = section.splitlines()[0].strip()
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    found = re.search(rf"^{re.escape(heading)}[ \t]*\n.*?(?=^## |\Z)", text, flags=re.M | re.S)
    section = section.strip() + "\n\n"
    text = text[: found.start()] + section + text[found.end() :] if found else text.rstrip() + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.rstrip() + "\n")
