"""The one place where benchmark scripts write their section of docs/benchmarks.md."""

from __future__ import annotations

import re
from pathlib import Path


def replace_section(path: Path, section: str, parent: str | None = None) -> None:
    """Put ``section`` (its first line is its heading, "## " or deeper) where the section with that heading is in
    the markdown file at ``path``, or append it; the other sections are kept. With ``parent`` (a heading) the
    section is looked for, or appended, inside that section only. The file is read right before it is written,
    since a benchmark runs for minutes and another may have written meanwhile."""
    heading = section.splitlines()[0].strip()
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    start, end = 0, len(text)
    if parent is not None:
        found = _find(text, parent.strip())
        if found is None:
            raise ValueError(f"{path}: no section {parent.strip()!r} to put {heading!r} in")
        start, end = found
    found = _find(text[start:end], heading)
    section = section.strip() + "\n\n"
    if found:
        text = text[: start + found[0]] + section + text[start + found[1] :]
    else:
        text = text[:end].rstrip() + "\n\n" + section + text[end:]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.rstrip() + "\n")


def _find(text: str, heading: str) -> tuple[int, int] | None:
    """Where the section under ``heading`` starts and ends: at the next heading of its level or above."""
    level = len(heading) - len(heading.lstrip("#"))
    found = re.search(rf"^{re.escape(heading)}[ \t]*\n.*?(?=^#{{1,{level}}} |\Z)", text, flags=re.M | re.S)
    return (found.start(), found.end()) if found else None
