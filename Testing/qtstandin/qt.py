"""Stand-in for Slicer's ``qt`` module (PythonQt), backed by PySide6, for tests only.

PythonQt puts QtCore, QtGui, QtWidgets and QtUiTools in one ``qt`` namespace; so does this module. Where
PythonQt answers differently from PySide6 and our widget code relies on it, the PythonQt answer is kept:

- ``QFileDialog.getOpenFileName`` (and its siblings) return the path, not PySide6's ``(path, filter)``;
- modal dialogs never block: each one is recorded and answered from the test's script
  (``Testing.qtstandin.dialogs``), as a radiologist would answer it.

Installed as ``sys.modules["qt"]`` by ``Testing.qtstandin.StandIn``; never importable as ``qt`` otherwise.
"""

from __future__ import annotations

from PySide6 import QtCore, QtGui, QtUiTools, QtWidgets

from .dialogs import answerDialog, answerFileDialog

for _module in (QtCore, QtGui, QtWidgets, QtUiTools):
    for _name in dir(_module):
        if _name.startswith("Q") or _name in ("Qt", "Signal", "Slot", "Property"):
            globals()[_name] = getattr(_module, _name)
del _module, _name


class QFileDialog(QtWidgets.QFileDialog):
    """PythonQt's file dialog: the static getters return the chosen path(s) ('' or [] when cancelled)."""

    @staticmethod
    def getOpenFileName(parent=None, caption="", directory="", filter="", *args, **kwargs) -> str:
        return answerFileDialog("getOpenFileName", caption, directory, filter)

    @staticmethod
    def getOpenFileNames(parent=None, caption="", directory="", filter="", *args, **kwargs) -> list[str]:
        return answerFileDialog("getOpenFileNames", caption, directory, filter)

    @staticmethod
    def getSaveFileName(parent=None, caption="", directory="", filter="", *args, **kwargs) -> str:
        return answerFileDialog("getSaveFileName", caption, directory, filter)

    @staticmethod
    def getExistingDirectory(parent=None, caption="", directory="", *args, **kwargs) -> str:
        return answerFileDialog("getExistingDirectory", caption, directory, "")


class QMessageBox(QtWidgets.QMessageBox):
    """The static question/information/warning/critical boxes are answered from the test's script."""

    @staticmethod
    def question(parent, title, text, *args, **kwargs):
        return answerDialog(f"QMessageBox.question: {title}: {text}")

    @staticmethod
    def information(parent, title, text, *args, **kwargs):
        return answerDialog(f"QMessageBox.information: {title}: {text}")

    @staticmethod
    def warning(parent, title, text, *args, **kwargs):
        return answerDialog(f"QMessageBox.warning: {title}: {text}")

    @staticmethod
    def critical(parent, title, text, *args, **kwargs):
        return answerDialog(f"QMessageBox.critical: {title}: {text}")


class QInputDialog(QtWidgets.QInputDialog):
    """PythonQt returns the value alone from the static getters (None-like when cancelled)."""

    @staticmethod
    def getText(parent, title, label, *args, **kwargs) -> str:
        return answerDialog(f"QInputDialog.getText: {title}: {label}")

    @staticmethod
    def getItem(parent, title, label, items, *args, **kwargs) -> str:
        return answerDialog(f"QInputDialog.getItem: {title}: {label} {list(items)}")
