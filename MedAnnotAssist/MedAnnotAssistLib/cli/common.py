"""What several ``medannot`` command groups share: exit codes, protocol lookup, label names, progress."""

from __future__ import annotations

import sys
from pathlib import Path

EXIT_INVALID = 2
DEFAULT_DATA_DIR = Path("var")


def resolve_protocol(value: str):
    """A protocol file path, or the id of a bundled protocol."""
    from ..core.protocol import bundled_protocol, load_protocol

    path = Path(value)
    if path.suffix == ".json" or path.exists():
        return load_protocol(path)
    return bundled_protocol(value)


def label_names(args, protocol=None):
    """The ``--labels-json`` mapping of label values to names, or None; with a protocol, a name that matches
    nothing (no structure of it, no name the name map knows) is a ValueError naming it."""
    from ..core.sample_data import load_label_names
    from ..core.structure_names import check_label_names

    if not getattr(args, "labels_json", None):
        return None
    names = load_label_names(args.labels_json)
    if protocol is not None:
        check_label_names(names, protocol, str(args.labels_json))
    return names


def print_check(check) -> None:
    for s in check.structures:
        mark = "*" if s.required else " "
        problems = "; ".join(r.message for r in s.problems)
        print(f"  {mark} {s.name:<28} {s.state:<9} {s.volume_ml:9.1f} ml  {problems}")
    print(check.summary())


class ProgressBar:
    """A one-line text progress bar on stderr; ``ProgressBar.end_line()`` ends an unfinished one (before an error)."""

    unfinished = None  # the stream of a bar whose line is not ended yet

    def __init__(self, label: str, stream=None, width: int = 30):
        self.label, self.stream, self.width = label, stream or sys.stderr, width

    def __call__(self, fraction: float, message: str = "") -> None:
        filled = int(round(fraction * self.width))
        bar = "#" * filled + "." * (self.width - filled)
        self.stream.write(f"\r{self.label} [{bar}] {fraction * 100:5.1f}% {message[:40]:<40}")
        ProgressBar.unfinished = self.stream
        if fraction >= 1.0:
            self.stream.write("\n")
            ProgressBar.unfinished = None
        self.stream.flush()

    @staticmethod
    def end_line() -> None:
        if ProgressBar.unfinished is not None:
            ProgressBar.unfinished.write("\n")
            ProgressBar.unfinished.flush()
            ProgressBar.unfinished = None
