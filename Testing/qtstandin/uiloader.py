"""Loading the module's real .ui files with PySide6's QUiLoader, CTK/qMRML classes replaced by placeholders.

What ``slicer.util.loadUI`` does in Slicer, with two differences that keep tests honest:

- a custom widget class without a placeholder is an error naming the file and the class (QUiLoader would
  silently put a plain QWidget there);
- the .ui's signal/slot ``<connections>`` are made in Python by name (PySide6 signals of placeholders have
  Python signatures, so Qt could not match ``mrmlSceneChanged(vtkMRMLScene*)``); a connection whose signal
  or slot does not exist is an error too.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from PySide6 import QtCore, QtUiTools, QtWidgets

from . import ctk, qmrml

PLACEHOLDERS = {cls.__name__: cls for cls in (*ctk.PLACEHOLDERS, *qmrml.PLACEHOLDERS)}


class UiLoadError(RuntimeError):
    """A .ui file the stand-in cannot build faithfully."""


def customClasses(root: ET.Element) -> set[str]:
    """Widget classes of a .ui that Qt itself does not provide."""
    known = set(QtUiTools.QUiLoader().availableWidgets())
    return {w.get("class") for w in root.iter("widget")} - known


def loadUi(path: str | Path, parent: QtWidgets.QWidget | None = None) -> QtWidgets.QWidget:
    """The widget tree of a .ui file, its custom widgets replaced by placeholders, its connections made."""
    path = Path(path)
    if not path.is_file():
        raise UiLoadError(f"Could not load UI file: file not found {path}")
    root = ET.parse(path).getroot()
    missing = sorted(customClasses(root) - set(PLACEHOLDERS))
    if missing:
        raise UiLoadError(
            f"{path.name} uses {', '.join(missing)}, which the Qt stand-in has no placeholder for: "
            "add one to Testing/qtstandin/ctk.py or qmrml.py"
        )
    connections = root.find("connections")
    wiring = []
    if connections is not None:
        for c in connections.iter("connection"):
            wiring.append(tuple(c.findtext(tag, "") for tag in ("sender", "signal", "receiver", "slot")))
        root.remove(connections)

    loader = QtUiTools.QUiLoader()
    for cls in PLACEHOLDERS.values():
        loader.registerCustomWidget(cls)
    data = QtCore.QByteArray(ET.tostring(root, encoding="utf-8"))
    buffer = QtCore.QBuffer(data)
    buffer.open(QtCore.QIODevice.ReadOnly)
    widget = loader.load(buffer, parent)
    if widget is None:
        raise UiLoadError(f"Could not load UI file: {path}: {loader.errorString()}")
    for sender, signal, receiver, slot in wiring:
        _connect(path, widget, sender, signal, receiver, slot)
    return widget


def _find(root: QtWidgets.QWidget, name: str):
    return root if root.objectName() == name else root.findChild(QtCore.QObject, name)


def _connect(path: Path, root, senderName: str, signal: str, receiverName: str, slot: str) -> None:
    sender, receiver = _find(root, senderName), _find(root, receiverName)
    signalName, slotName = signal.split("(")[0], slot.split("(")[0]
    where = f"{path.name}: connection {senderName}.{signal} -> {receiverName}.{slot}"
    if sender is None or receiver is None:
        raise UiLoadError(f"{where}: no widget named {senderName if sender is None else receiverName}")
    boundSignal, boundSlot = getattr(sender, signalName, None), getattr(receiver, slotName, None)
    if boundSignal is None or not hasattr(boundSignal, "connect"):
        raise UiLoadError(f"{where}: {type(sender).__name__} has no signal {signalName}")
    if not callable(boundSlot):
        raise UiLoadError(f"{where}: {type(receiver).__name__} has no slot {slotName}")
    boundSignal.connect(boundSlot)


def childWidgetVariables(widget: QtWidgets.QWidget):
    """``slicer.util.childWidgetVariables``: each named object of the tree (the root too) as an attribute."""
    ui = type("", (), {})()
    for child in [widget, *widget.findChildren(QtCore.QObject)]:
        if child.objectName():
            setattr(ui, child.objectName(), child)
    return ui
