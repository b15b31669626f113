"""Pictures of real panels: a widget rendered offscreen to a PNG file.

Tests save their pictures under their own temporary folder. With ``MEDANNOT_USER_GUIDE_PICTURES=1`` in the
environment they also write them to docs/images/ (the user guide's pictures), so the guide is refreshed
deliberately, never as a side effect of an ordinary test run.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from PySide6 import QtWidgets

USER_GUIDE_SWITCH = "MEDANNOT_USER_GUIDE_PICTURES"
USER_GUIDE_FOLDER = Path(__file__).resolve().parents[2] / "docs" / "images"


def savePicture(widget: QtWidgets.QWidget, path: str | Path, size: tuple[int, int] | None = None) -> Path:
    """Render ``widget`` as shown (layouts settled, pending events handled) to the PNG file ``path``."""
    if size is not None:
        widget.resize(*size)
    widget.show()
    for _ in range(3):  # a layout change can post another one
        QtWidgets.QApplication.processEvents()
    pixmap = widget.grab()
    if pixmap.isNull():
        raise RuntimeError(f"{widget.objectName() or type(widget).__name__}: nothing to render")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not pixmap.save(str(path), "PNG"):
        raise OSError(f"could not write {path}")
    return path


class Pictures:
    """Saves named pictures to ``folder``, and to the user guide's folder when ``userGuide`` is set."""

    def __init__(self, folder: Path, userGuide: Path | None = None):
        self.folder, self.userGuide = Path(folder), userGuide
        self.saved: list[Path] = []

    @classmethod
    def fromEnvironment(cls, folder: Path) -> Pictures:
        wanted = os.environ.get(USER_GUIDE_SWITCH, "").lower() in ("1", "true", "yes")
        return cls(folder, USER_GUIDE_FOLDER if wanted else None)

    def save(self, widget: QtWidgets.QWidget, name: str, size: tuple[int, int] | None = None) -> Path:
        path = savePicture(widget, self.folder / f"{name}.png", size)
        self.saved.append(path)
        if self.userGuide is not None:
            self.userGuide.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, self.userGuide / path.name)
        return path
