"""The one place where benchmark scripts write their section of docs/benchmarks.md."""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def claim_bench_main(
    name: str, description: str, repeats_help: str, prepare: Callable, run: Callable, section: Callable, argv=None
) -> None:
    """The command line of the claim-to-case benchmarks (bench/client.py, bench/web.py): prepare the 20-slice series
    and a large case in a temporary folder, run, keep the raw figures in var/bench/NAME.json, write the section."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--repeats", type=int, default=5, help=f"{repeats_help} (default 5)")
    parser.add_argument("--note", help="a line for the doc (e.g. that the machine was shared)")
    parser.add_argument("--size", type=int, nargs=3, default=[512, 512, 300], metavar=("I", "J", "K"))
    parser.add_argument("--doc", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument("--no-doc", action="store_true", help="print the section, leave docs/benchmarks.md")
    args = parser.parse_args(argv)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        work = Path(tmp)
        print(f"preparing the series and the {' x '.join(map(str, args.size))} case ...", flush=True)
        datasets = prepare(work, tuple(args.size))
        results = run(datasets, args.repeats, work)
    minutes = (time.monotonic() - started) / 60
    out = REPO / "var" / "bench" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    described = {k: {f: str(v) for f, v in d.items()} for k, d in datasets.items()}
    out.write_text(json.dumps({"datasets": described, "results": results}, indent=1))
    text = section(datasets, results, args, minutes)
    if not args.no_doc:
        replace_section(args.doc, text)
    print(text)


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
