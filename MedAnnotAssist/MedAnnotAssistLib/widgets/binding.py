"""What every section of the module panel shares: a workflow model bound to the widgets of its .ui.

A binding renders the model's state on each ``changed`` event and forwards the user's clicks to the model's
actions; it decides nothing itself. A button shows its ``Action``: enabled or not, and in its tooltip the
reason it is off. Qt is used through what Slicer's PythonQt and PySide6 read alike (new-style signals,
setters, ``widget.property(name)``), so the same code runs in Slicer and in the widget tests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import qt
from slicer.i18n import tr as _

if TYPE_CHECKING:
    from ..workflow.events import Action, Event

ERROR_COLOR = "#c0392b"
GOOD_COLOR = "#2a9d3a"
WARNING_COLOR = "#e07000"


def text(widget) -> str:
    """The text of a line edit or label, read the same in PythonQt and PySide6."""
    return str(widget.property("text") or "")


def minutes(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    return (
        f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        if seconds >= 3600
        else (f"{seconds // 60}:{seconds % 60:02d}")
    )


def colored(label, words: str, color: str | None = None) -> None:
    label.setText(words)
    label.setStyleSheet(f"color: {color}" if color else "")


def showMessage(label, words: str, error: bool) -> None:
    """The model's last word under its buttons (red when something went wrong)."""
    colored(label, words, ERROR_COLOR if error else None)


def showProgress(bar, progress) -> None:
    """A ``Progress`` (fraction, message) or None (hidden)."""
    bar.setVisible(progress is not None)
    if progress is not None:
        bar.setValue(int(round(100 * max(0.0, min(1.0, progress.fraction)))))
        bar.setFormat(f"{progress.message} %p%" if progress.message else "%p%")


def setCell(table, row: int, column: int, words: str, toolTip: str = "", color: str | None = None, data=None):
    """Fill a table cell, reusing its item (a re-render every second must not flicker or lose the scroll)."""
    item = table.item(row, column)
    if item is None:
        item = qt.QTableWidgetItem()
        table.setItem(row, column, item)
    if item.text() != words:
        item.setText(words)
    item.setToolTip(toolTip)
    item.setForeground(qt.QBrush(qt.QColor(color)) if color else qt.QBrush())
    if data is not None:
        item.setData(qt.Qt.UserRole, data)
    return item


def setSwatch(table, row: int, column: int, color: str) -> None:
    item = setCell(table, row, column, "", color)
    item.setBackground(qt.QBrush(qt.QColor(color)))


def fitRows(table, rows: int, most: int = 12, least: int = 3) -> None:
    """A table as tall as its rows (between ``least`` and ``most`` of them), so the panel does not scroll empty
    space. Sizes are read with ``property()``: ``height`` is a Qt property PythonQt would not let us call."""
    header = table.horizontalHeader().property("sizeHint").height()
    rowHeight = table.verticalHeader().property("defaultSectionSize")
    frame = 2 * table.property("frameWidth")
    scrollBar = table.horizontalScrollBar().property("sizeHint").height()
    table.setFixedHeight(header + max(least, min(rows, most)) * rowHeight + frame + scrollBar)


def blocked(widget):
    """``with blocked(widget):`` changes made by the render do not call the user's slots."""
    return _Blocked(widget)


class _Blocked:
    def __init__(self, widget):
        self.widget = widget

    def __enter__(self):
        self.was = self.widget.blockSignals(True)
        return self.widget

    def __exit__(self, *exc):
        self.widget.blockSignals(self.was)
        return False


class Binding:
    """A model's state rendered on its widgets (``render``), its other events handled by ``onModelEvent``."""

    def __init__(self, model, ui):
        self.model = model
        self.ui = ui
        self._tips: dict[str, str] = {}
        self._unsubscribe = model.subscribe(self.onEvent)

    def onEvent(self, event: Event) -> None:
        if event.name == "changed":
            self.render(event["state"])
        else:
            self.onModelEvent(event)

    def render(self, state) -> None:
        raise NotImplementedError

    def onModelEvent(self, event: Event) -> None:
        """Events besides ``changed`` (``selected``, ``lease_lost`` ...); none by default."""

    def showAction(self, widget, action: Action, enabled_tip: str | None = None) -> None:
        """Enabled or not as the model says; the tooltip says what it does, or why it is off now."""
        name = str(widget.property("objectName"))
        if name not in self._tips:
            self._tips[name] = str(widget.property("toolTip") or "")
        tip = enabled_tip if enabled_tip is not None else self._tips[name]
        widget.setEnabled(action.enabled)
        if action.enabled or not action.reason:
            widget.setToolTip(tip)
        else:
            widget.setToolTip(_("Not now: {reason}").format(reason=action.reason) + (f"\n{tip}" if tip else ""))

    def cleanup(self) -> None:
        self._unsubscribe()
