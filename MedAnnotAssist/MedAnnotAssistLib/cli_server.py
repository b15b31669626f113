"""`medannot serve` and `medannot admin …`: the task-queue server (package ``medannotassist_server``)."""

from __future__ import annotations


def add_commands(commands) -> None:
    """Register the server's commands on the ``medannot`` sub-parsers."""
