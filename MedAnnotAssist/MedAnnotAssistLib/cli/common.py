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


def label_names(args):
    """The ``--labels-json`` mapping of label values to names, or None."""
    from ..core.sample_data import load_label_names

    return load_label_names(args.labels_json) if getattr(args, "labels_json", None) else None


def print_check(check) -> None:
    for s in check.structures:
        mark = "*" if s.required else " "
        problems = "; ".join(r.message for r in s.problems)
        print(f"  {mark} {s.name:<28} {s.state:<9} {s.volume_ml:9.1f} ml  {problems}")
    print(check.summary())


class ProgressBar:
    """A one-line text progress bar on stderr."""

    def __init__(self, label: str, stream=sys.stderr, width: int = 30):
        self.label, self.stream, self.width = label, stream, width

    def __call__(self, fraction: float, message: str = "") -> None:
        filled = int(round(fraction * self.width))
        bar = "#" * filled + "." * (self.width - filled)
        self.stream.write(f"\r{self.label} [{bar}] {fraction * 100:5.1f}% {message[:40]:<40}")
        if fraction >= 1.0:
            self.stream.write("\n")
        self.stream.flush()
