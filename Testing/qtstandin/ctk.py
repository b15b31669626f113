"""Stand-in for CTK's ``ctk`` module: placeholder widgets with the part of CTK's API our .ui files and widgets use.

Each class below is a placeholder, not CTK: it draws something close enough for a picture of the panel and
offers the properties, signals and slots of the real widget that the module uses (names and meanings as in
CTK's headers). Properties are Qt properties (PySide6 ``Property``), so ``widget.collapsed`` reads and
assigns as in PythonQt. A .ui file using a CTK class missing here fails to load with a message naming it
(``Testing.qtstandin.uiloader``); add the class here, with only what the module needs.
"""

from __future__ import annotations

from PySide6 import QtCore, QtWidgets
from PySide6.QtCore import Property, Signal


class ctkCollapsibleButton(QtWidgets.QGroupBox):
    """Stand-in for ctkCollapsibleButton: a titled section whose contents hide when collapsed."""

    contentsCollapsed = Signal(bool)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._collapsed = False

    def _text(self) -> str:
        return self.title()

    def setText(self, text: str) -> None:
        self.setTitle(text)

    text = Property(str, _text, setText)

    def isCollapsed(self) -> bool:
        return self._collapsed

    def setCollapsed(self, collapsed: bool) -> None:
        if bool(collapsed) == self._collapsed:
            return
        self._collapsed = bool(collapsed)
        for child in self.findChildren(QtWidgets.QWidget, options=QtCore.Qt.FindDirectChildrenOnly):
            child.setVisible(not self._collapsed)
        self.contentsCollapsed.emit(self._collapsed)

    collapsed = Property(bool, isCollapsed, setCollapsed)

    def childEvent(self, event) -> None:
        """As CTK does: a widget that arrives in a collapsed section stays hidden (a .ui sets ``collapsed``
        before it adds the section's contents)."""
        super().childEvent(event)
        if self._collapsed and event.type() in (QtCore.QEvent.ChildAdded, QtCore.QEvent.ChildPolished):
            child = event.child()
            if isinstance(child, QtWidgets.QWidget):
                child.setVisible(False)


class ctkCollapsibleGroupBox(ctkCollapsibleButton):
    """Stand-in for ctkCollapsibleGroupBox: the same collapsing section, titled by ``title``."""


class ctkMenuButton(QtWidgets.QPushButton):
    """Stand-in for ctkMenuButton: a push button whose arrow opens its menu (``setMenu``)."""


class ctkSearchBox(QtWidgets.QLineEdit):
    """Stand-in for ctkSearchBox: a line edit for filter text."""


class ctkPathLineEdit(QtWidgets.QWidget):
    """Stand-in for ctkPathLineEdit: a path field with a browse button (``currentPath``, ``currentPathChanged``)."""

    currentPathChanged = Signal(str)
    validInputChanged = Signal(bool)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._edit = QtWidgets.QLineEdit(self)
        self._browse = QtWidgets.QToolButton(self)
        self._browse.setText("…")
        layout = QtWidgets.QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self._edit)
        layout.addWidget(self._browse)
        self._nameFilters: list[str] = []
        self._edit.textChanged.connect(self.currentPathChanged)

    def _currentPath(self) -> str:
        return self._edit.text()

    def setCurrentPath(self, path: str) -> None:
        self._edit.setText(path)

    currentPath = Property(str, _currentPath, setCurrentPath)

    def _getNameFilters(self) -> list[str]:
        return list(self._nameFilters)

    def _setNameFilters(self, filters) -> None:
        self._nameFilters = list(filters)

    nameFilters = Property("QStringList", _getNameFilters, _setNameFilters)


class ctkSliderWidget(QtWidgets.QWidget):
    """Stand-in for ctkSliderWidget: a slider and a spin box (``value``, ``minimum``, ``maximum``, ``valueChanged``)."""

    valueChanged = Signal(float)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._spin = QtWidgets.QDoubleSpinBox(self)
        self._slider = QtWidgets.QSlider(QtCore.Qt.Horizontal, self)
        self._slider.setRange(0, 1000)
        layout = QtWidgets.QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self._slider)
        layout.addWidget(self._spin)
        self._spin.valueChanged.connect(self._fromSpin)
        self._slider.valueChanged.connect(self._fromSlider)

    def _fromSpin(self, value: float) -> None:
        span = self._spin.maximum() - self._spin.minimum()
        blocked = self._slider.blockSignals(True)
        self._slider.setValue(round(1000 * (value - self._spin.minimum()) / span) if span else 0)
        self._slider.blockSignals(blocked)
        self.valueChanged.emit(value)

    def _fromSlider(self, position: int) -> None:
        self._spin.setValue(self._spin.minimum() + position / 1000 * (self._spin.maximum() - self._spin.minimum()))

    def _value(self) -> float:
        return self._spin.value()

    def setValue(self, value: float) -> None:
        self._spin.setValue(value)

    value = Property(float, _value, setValue)

    def _minimum(self) -> float:
        return self._spin.minimum()

    def setMinimum(self, value: float) -> None:
        self._spin.setMinimum(value)

    minimum = Property(float, _minimum, setMinimum)

    def _maximum(self) -> float:
        return self._spin.maximum()

    def setMaximum(self, value: float) -> None:
        self._spin.setMaximum(value)

    maximum = Property(float, _maximum, setMaximum)

    def _singleStep(self) -> float:
        return self._spin.singleStep()

    def setSingleStep(self, value: float) -> None:
        self._spin.setSingleStep(value)

    singleStep = Property(float, _singleStep, setSingleStep)

    def _decimals(self) -> int:
        return self._spin.decimals()

    def setDecimals(self, value: int) -> None:
        self._spin.setDecimals(value)

    decimals = Property(int, _decimals, setDecimals)


PLACEHOLDERS = (
    ctkCollapsibleButton,
    ctkCollapsibleGroupBox,
    ctkMenuButton,
    ctkSearchBox,
    ctkPathLineEdit,
    ctkSliderWidget,
)
