"""Stand-in for ``slicer.parameterNodeWrapper``: typed access to a scripted module node and GUI binding.

Follows Slicer's ``parameterNodeWrapper`` (Base/Python/slicer/parameterNodeWrapper/wrapper.py): each
annotated member is a property reading and writing the MRML node (node references for MRML node types,
string parameters otherwise), defaults are written on construction, ``connectGui(ui)`` binds every widget
whose ``SlicerParameterName`` property names a member, both ways, and ``AddObserver``/``StartModify``...
forward to the node. Reduced to: MRML nodes, str, bool, int, float, Path (and ``X | None`` of them); the GUI
connectors listed in ``CONNECTORS``. Anything else raises ``TypeError`` naming this stand-in, so a new kind of
parameter or widget is added here rather than silently unbound.
"""

from __future__ import annotations

import pathlib
import types
import typing

import slicer
import vtk
from PySide6 import QtWidgets

from . import ctk, qmrml

PROPERTY = "SlicerParameterName"


class _Serializer:
    def __init__(self, kind):
        self.kind = kind

    def isNode(self) -> bool:
        return isinstance(self.kind, type) and issubclass(self.kind, slicer.vtkMRMLNode)

    def default(self):
        return None if self.isNode() else {str: "", bool: False, int: 0, float: 0.0, pathlib.Path: None}[self.kind]

    def isIn(self, node, name: str) -> bool:
        return node.GetNodeReferenceID(name) is not None if self.isNode() else node.HasParameter(name)

    def write(self, node, name: str, value) -> None:
        if self.isNode():
            if value is not None and not value.IsA(self.kind.__name__):
                raise TypeError(f"parameter {name}: expected a {self.kind.__name__}, got {value.GetClassName()}")
            node.SetNodeReferenceID(name, value.GetID() if value is not None else None)
        elif value is None:
            node.SetParameter(name, "")
        elif self.kind is bool:
            node.SetParameter(name, "true" if value else "false")
        else:
            node.SetParameter(name, str(self.kind(value)))

    def read(self, node, name: str):
        if self.isNode():
            return node.GetNodeReference(name)
        text = node.GetParameter(name)
        if self.kind is bool:
            return text == "true"
        if self.kind is pathlib.Path:
            return pathlib.Path(text) if text else None
        return self.kind(text) if text or self.kind is str else self.default()


def _serializer(owner: type, name: str, annotation) -> _Serializer:
    kind = annotation
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(kind) if a is not type(None)]
        kind = options[0] if len(options) == 1 else kind
    known = isinstance(kind, type) and (issubclass(kind, slicer.vtkMRMLNode) or kind in (str, bool, int, float))
    if not known and kind is not pathlib.Path:
        raise TypeError(
            f"{owner.__name__}.{name}: the parameterNodeWrapper stand-in (Testing/qtstandin/parameter_nodes.py) "
            f"does not handle {annotation!r}; add it there"
        )
    return _Serializer(kind)


class _Connector:
    """One widget bound to one parameter: its change signal, how to read it and how to write it."""

    def __init__(self, widget, signal, read, write):
        self.widget, self.signal, self.read, self.write = widget, signal, read, write
        self._callback = None

    def onChanged(self, callback) -> None:
        if self._callback is not None:
            self.signal.disconnect(self._callback)
        self._callback = callback
        if callback is not None:
            self.signal.connect(callback)


def _nodeCombo(w):
    return _Connector(w, w.currentNodeChanged, w.currentNode, w.setCurrentNode)


CONNECTORS = (
    # (widget class, connector): the first class the widget is an instance of wins
    (qmrml.qMRMLNodeComboBox, _nodeCombo),
    (ctk.ctkPathLineEdit, lambda w: _Connector(w, w.currentPathChanged, lambda: w.currentPath, w.setCurrentPath)),
    (ctk.ctkSliderWidget, lambda w: _Connector(w, w.valueChanged, lambda: w.value, w.setValue)),
    (ctk.ctkCollapsibleButton, lambda w: _Connector(w, w.contentsCollapsed, w.isCollapsed, w.setCollapsed)),
    (QtWidgets.QAbstractButton, lambda w: _Connector(w, w.toggled, w.isChecked, w.setChecked)),
    (QtWidgets.QLineEdit, lambda w: _Connector(w, w.textChanged, w.text, w.setText)),
    (QtWidgets.QSpinBox, lambda w: _Connector(w, w.valueChanged, w.value, w.setValue)),
    (QtWidgets.QDoubleSpinBox, lambda w: _Connector(w, w.valueChanged, w.value, w.setValue)),
    (QtWidgets.QComboBox, lambda w: _Connector(w, w.currentTextChanged, w.currentText, w.setCurrentText)),
)


def _connector(widget, name: str) -> _Connector:
    for cls, make in CONNECTORS:
        if isinstance(widget, cls):
            return make(widget)
    raise TypeError(
        f"parameter {name}: the parameterNodeWrapper stand-in has no GUI connector for {type(widget).__name__} "
        f"({widget.objectName()}); add one to CONNECTORS in Testing/qtstandin/parameter_nodes.py"
    )


def _makeProperty(name: str):
    return property(lambda self: self.getValue(name), lambda self, value: self.setValue(name, value))


def parameterNodeWrapper(classtype=None):
    """Class decorator: typed properties over a vtkMRMLScriptedModuleNode, with ``connectGui``."""

    def wrap(cls):
        hints = typing.get_type_hints(cls)
        parameters = {}
        for name, annotation in hints.items():
            serializer = _serializer(cls, name, annotation)
            default = getattr(cls, name) if hasattr(cls, name) else serializer.default()
            parameters[name] = (serializer, default)
            setattr(cls, name, _makeProperty(name))
        cls.allParameters = parameters
        cls._is_parameter_node_wrapper = True
        cls.__init__ = _init
        for method in (getValue, setValue, connectGui, disconnectGui, _updateGui):
            setattr(cls, method.__name__, method)
        cls.StartModify = lambda self: self.parameterNode.StartModify()
        cls.EndModify = lambda self, wasModified: self.parameterNode.EndModify(wasModified)
        cls.AddObserver = lambda self, event, callback, priority=0.0: self.parameterNode.AddObserver(
            event, callback, priority
        )
        cls.RemoveObserver = lambda self, tag: self.parameterNode.RemoveObserver(tag)
        cls.Modified = lambda self: self.parameterNode.Modified()
        return cls

    return wrap if classtype is None else wrap(classtype)


def _init(self, parameterNode):
    self.parameterNode = parameterNode
    self._guis: dict[int, dict[str, _Connector]] = {}
    self._nextTag = 0
    self._updating = False
    for name, (serializer, default) in self.allParameters.items():
        if not serializer.isIn(parameterNode, name):
            serializer.write(parameterNode, name, default)


def getValue(self, name: str):
    serializer, _default = self.allParameters[name]
    return serializer.read(self.parameterNode, name)


def setValue(self, name: str, value) -> None:
    serializer, _default = self.allParameters[name]
    with slicer.util.NodeModify(self.parameterNode):
        serializer.write(self.parameterNode, name, value)


def connectGui(self, gui) -> int:
    """Bind each widget of ``gui`` (a widget, or an object holding widgets) whose SlicerParameterName is set."""
    widgets = gui.findChildren(QtWidgets.QWidget) if isinstance(gui, QtWidgets.QWidget) else gui.__dict__.values()
    mapping = {}
    for widget in widgets:
        name = widget.property(PROPERTY) if hasattr(widget, "property") else None
        if name:
            if name not in self.allParameters:
                raise ValueError(f"{widget.objectName()}: SlicerParameterName '{name}' is not a parameter")
            mapping[name] = _connector(widget, name)
    tag, self._nextTag = self._nextTag, self._nextTag + 1
    self._guis[tag] = mapping
    for name, connector in mapping.items():
        connector.write(self.getValue(name))
        connector.onChanged(lambda *args, name=name, connector=connector: _fromGui(self, name, connector))
    self.AddObserver(vtk.vtkCommand.ModifiedEvent, lambda caller, event: self._updateGui())
    return tag


def _fromGui(self, name: str, connector: _Connector) -> None:
    if not self._updating:
        self.setValue(name, connector.read())


def _updateGui(self) -> None:
    if self._updating:
        return
    self._updating = True
    try:
        for mapping in self._guis.values():
            for name, connector in mapping.items():
                connector.write(self.getValue(name))
    finally:
        self._updating = False


def disconnectGui(self, tag: int) -> None:
    for connector in self._guis.pop(tag, {}).values():
        connector.onChanged(None)
