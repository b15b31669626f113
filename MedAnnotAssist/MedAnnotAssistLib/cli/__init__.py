"""``medannot``: the command line of MedAnnotAssist, one module per command group.

Exit codes: 0 success, 1 a failure while working, 2 invalid input (bad protocol, bad arguments),
3 done but with cases or files that need attention (a check not ready, flagged DICOM, failed batch cases).
"""

from __future__ import annotations

import argparse
import sys

from ..core.protocol import ProtocolError
from .common import EXIT_INVALID, ProgressBar


def build_parser() -> argparse.ArgumentParser:
    from . import consensus, dicom, presegment, protocols, run, server

    parser = argparse.ArgumentParser(prog="medannot", description="MedAnnotAssist: protocol-driven annotation")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (protocols, consensus, presegment, dicom, server, run):
        group.add_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ProtocolError, KeyError, ValueError, OSError, RuntimeError) as error:
        ProgressBar.end_line()  # the error gets a line of its own
        return _report(error)


def _report(error: Exception) -> int:
    """Print the error for the user; the exit code: 2 for invalid input, 1 for a failure while working."""
    if isinstance(error, ProtocolError):
        for problem in error.problems:
            print(problem, file=sys.stderr)
        return EXIT_INVALID
    if isinstance(error, (KeyError, ValueError, OSError)):
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"error: {message}", file=sys.stderr)
        return EXIT_INVALID if isinstance(error, (KeyError, ValueError)) else 1
    print(f"error: {error}", file=sys.stderr)  # an engine that is not installed or a server that does not answer
    return 1


if __name__ == "__main__":
    sys.exit(main())
