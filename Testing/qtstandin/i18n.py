"""Stand-in for ``slicer.i18n``: ``tr`` and ``translate`` go through Qt's translator, as in Slicer.

No translation is installed in tests, so the source text comes back; what is checked is that every string
the widgets show passes through ``_()``/``translate`` with a context, as Slicer's extraction tools expect.
"""

from __future__ import annotations

import sys

from PySide6 import QtCore


def translate(context: str, text: str) -> str:
    return QtCore.QCoreApplication.translate(context, text)


def getContext(sourceFile: str) -> str:
    """Slicer's context for a module's strings: the file's name without extension."""
    return sourceFile.replace("\\", "/").rsplit("/", 1)[-1].rsplit(".", 1)[0]


def tr(text: str) -> str:
    caller = sys._getframe(1).f_globals.get("__file__", "")
    return translate(getContext(caller), text)
