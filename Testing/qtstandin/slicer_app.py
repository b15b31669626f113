"""Stand-in for the Slicer application: ``slicer.app``, its main window and layout manager, and the
``slicer.util`` functions that need them.

``slicer.app`` is the QApplication plus what our module asks of Slicer: the application logic of a headless
slicer-core scene (``SceneContext.headless()``), a main window, a layout manager that records the layout
asked for, settings in a throwaway folder. ``slicer.util``'s message boxes do what they do in Slicer's
testing mode (log, do not block) and are recorded in ``messages`` for the test to assert; confirmations
take the test's scripted answer. Everything else in ``slicer.util`` is slicer-core's own code.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from PySide6 import QtCore, QtWidgets

from . import dialogs, uiloader


@dataclass(frozen=True)
class Message:
    level: str  # "error", "warning", "info"
    text: str
    windowTitle: str | None


class LayoutManagerStandIn:
    """Stand-in for qSlicerLayoutManager: remembers the layout asked for; no views are built."""

    def __init__(self):
        self.layout = 0
        self.layouts: list[int] = []

    def setLayout(self, layout: int) -> None:
        self.layout = layout
        self.layouts.append(layout)


class SlicerApplicationStandIn:
    """Stand-in for ``slicer.app`` (qSlicerApplication); unknown attributes fall through to the QApplication."""

    applicationName = "Slicer"

    def __init__(self, qapp: QtWidgets.QApplication, context):
        self._qapp = qapp
        self.context = context
        self._mainWindow = QtWidgets.QMainWindow()
        self._mainWindow.setObjectName("qSlicerMainWindow")
        self._layoutManager = LayoutManagerStandIn()
        self.messages: list[Message] = []
        self.selectedModules: list[str] = []

    def applicationLogic(self):
        return self.context.applicationLogic

    def mainWindow(self):
        return self._mainWindow

    def layoutManager(self):
        return self._layoutManager

    def testingEnabled(self) -> bool:
        return False

    @property
    def cachePath(self) -> str:
        """Slicer's cache folder (a Qt property there): next to the test's settings, never the user's."""
        return str(Path(QtCore.QSettings().fileName()).parent / "cache")

    def settings(self) -> QtCore.QSettings:
        """Slicer's settings: a QSettings in the folder the test fixture chose (never the user's own)."""
        return QtCore.QSettings()

    def userSettings(self) -> QtCore.QSettings:
        return QtCore.QSettings()

    def processEvents(self) -> None:
        self._qapp.processEvents()

    def setOverrideCursor(self, cursor) -> None:
        self._qapp.setOverrideCursor(cursor)

    def restoreOverrideCursor(self) -> None:
        self._qapp.restoreOverrideCursor()

    def __getattr__(self, name):
        return getattr(self._qapp, name)

    # -- what tests read ---------------------------------------------------------------------------------
    def takeMessages(self, level: str | None = None) -> list[Message]:
        """The messages shown so far (of one level), removed from the record."""
        taken = [m for m in self.messages if level is None or m.level == level]
        self.messages = [m for m in self.messages if m not in taken]
        return taken


def utilOverrides(app: SlicerApplicationStandIn) -> dict:
    """``slicer.util`` functions replaced under the stand-in, by name."""

    def record(level: str):
        def display(text, windowTitle=None, parent=None, standardButtons=None, **kwargs):
            logging.log(getattr(logging, level.upper()), text)
            app.messages.append(Message(level, str(text), windowTitle))

        return display

    def confirm(kind: str):
        def display(text, windowTitle=None, parent=None, **kwargs):
            return bool(dialogs.answerDialog(f"slicer.util.{kind}: {text}"))

        return display

    def selectModule(module) -> None:
        app.selectedModules.append(module if isinstance(module, str) else module.name)

    return {
        "loadUI": lambda path: uiloader.loadUi(path),
        "childWidgetVariables": uiloader.childWidgetVariables,
        "mainWindow": lambda: app.mainWindow(),
        "errorDisplay": record("error"),
        "warningDisplay": record("warning"),
        "infoDisplay": record("info"),
        "confirmOkCancelDisplay": confirm("confirmOkCancelDisplay"),
        "confirmYesNoDisplay": confirm("confirmYesNoDisplay"),
        "selectModule": selectModule,
        "showStatusMessage": lambda message, duration=0: app.mainWindow().statusBar().showMessage(message, duration),
    }
