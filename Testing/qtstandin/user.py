"""What a user does to a panel, as Qt events (offscreen): click a button or a table cell, choose in a combo
box, press a keyboard shortcut. A disabled or hidden widget refuses the click, as it would on screen."""

from __future__ import annotations

from PySide6 import QtCore, QtGui, QtWidgets
from PySide6.QtTest import QTest


def click(button: QtWidgets.QAbstractButton) -> None:
    """A click where a user clicks: a button's middle, a check box's box (a wide check box is not clickable in
    its middle, past its label)."""
    if not (button.isEnabled() and button.isVisible()):
        raise AssertionError(f"{button.objectName() or button.text()}: cannot be clicked (disabled or hidden)")
    where = button.rect().center()
    if isinstance(button, QtWidgets.QCheckBox | QtWidgets.QRadioButton):
        where = QtCore.QPoint(min(8, where.x()), where.y())
    QTest.mouseClick(button, QtCore.Qt.LeftButton, QtCore.Qt.NoModifier, where)


def expand(section: QtWidgets.QWidget) -> None:
    """Open a collapsed section (a ctkCollapsibleButton), as a click on its title does in Slicer."""
    if not section.isVisible():
        raise AssertionError(f"{section.objectName()}: hidden")
    section.setCollapsed(False)


def clickCell(table: QtWidgets.QTableWidget, row: int, column: int, double: bool = False) -> None:
    """A click (or a double click: a click, then a second press reported as a double click) on a cell."""
    center = table.visualItemRect(table.item(row, column)).center()
    QTest.mouseClick(table.viewport(), QtCore.Qt.LeftButton, QtCore.Qt.NoModifier, center)
    if double:
        QTest.mouseDClick(table.viewport(), QtCore.Qt.LeftButton, QtCore.Qt.NoModifier, center)


def choose(combo: QtWidgets.QComboBox, index: int) -> None:
    """Pick an entry of a combo box's list (``activated`` fires, as for a click in the list)."""
    if not combo.isEnabled():
        raise AssertionError(f"{combo.objectName()}: cannot be used (disabled)")
    combo.setCurrentIndex(index)
    combo.activated.emit(index)


def typeText(edit: QtWidgets.QLineEdit, text: str, enter: bool = False) -> None:
    """Type into a line edit (what was there is selected first, so it is replaced), optionally pressing Enter."""
    if not (edit.isEnabled() and edit.isVisible()):
        raise AssertionError(f"{edit.objectName()}: cannot be typed into (disabled or hidden)")
    edit.selectAll()
    QTest.keyClicks(edit, text)
    edit.editingFinished.emit()  # offscreen, focus does not leave the field by itself
    if enter:
        QTest.keyClick(edit, QtCore.Qt.Key_Return)


def pressShortcut(window: QtWidgets.QWidget, sequence: str) -> None:
    """Press a key sequence such as ``Ctrl+Return`` in the (activated) window holding the panel."""
    window.activateWindow()
    if not QTest.qWaitForWindowActive(window, 1000):
        raise AssertionError(f"{window.objectName()}: the window could not be activated for {sequence}")
    combination = QtGui.QKeySequence(sequence)[0]
    QTest.keyClick(QtWidgets.QApplication.focusWidget() or window, combination.key(), combination.keyboardModifiers())
