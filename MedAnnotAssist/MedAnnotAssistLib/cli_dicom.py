"""`medannot deid`, `medannot export seg|rtstruct` and `medannot dicom-import`."""

from __future__ import annotations


def add_commands(commands) -> None:
    """Register the DICOM commands on the ``medannot`` sub-parsers."""
