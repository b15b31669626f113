"""Widget code uses only the Qt API that Slicer's PythonQt and PySide6 (the tests) understand alike.

PythonQt resolves a Qt property before a method of the same name: ``label.text`` is the text and
``label.text()`` fails; PySide6 is the other way round. So, on a Qt widget of the module's .ui files (or one
made with ``qt.QSomething(...)``), a property name such as ``text``, ``count``, ``enabled`` or ``rowCount`` is
not used as an attribute at all: change it with its setter (``setText``), read it with a getter of another
name (``isEnabled()``) or ``widget.property("text")``, or keep the value in the model. Placeholder classes
define their properties in Python, which reads and assigns the same in both (only calling them is wrong).
Signals are connected new-style (``button.clicked.connect``), never by a string signature.
"""

from __future__ import annotations

import ast
import xml.etree.ElementTree as ET
from pathlib import Path

from PySide6 import QtCore, QtWidgets

from Testing.conftest import MODULE_DIR
from Testing.qtstandin import ctk, qmrml, uiloader

WIDGET_FILES = [MODULE_DIR / "MedAnnotAssist.py", *sorted((MODULE_DIR / "MedAnnotAssistLib" / "widgets").rglob("*.py"))]


def ui_widget_classes(files=None) -> dict[str, set[type]]:
    """Widget name -> its classes in the module's .ui files (real Qt classes or the stand-in's placeholders)."""
    classes: dict[str, set[type]] = {}
    for path in files or sorted((MODULE_DIR / "Resources" / "UI").glob("*.ui")):
        for element in ET.parse(path).getroot().iter("widget"):
            cls = uiloader.PLACEHOLDERS.get(element.get("class")) or getattr(QtWidgets, element.get("class"))
            classes.setdefault(element.get("name"), set()).add(cls)
    return classes


def _qt_class(name: str) -> type | None:
    placeholder = {c.__name__: c for c in (*ctk.PLACEHOLDERS, *qmrml.PLACEHOLDERS)}.get(name)
    found = placeholder or getattr(QtWidgets, name, None) or getattr(QtCore, name, None)
    return found if isinstance(found, type) and issubclass(found, QtCore.QObject) else None


QT_MODULES = ("qt", "ctk", "slicer")
# properties every QObject has, whatever the receiver (nothing else in the module's code has these names)
EVERY_QOBJECT = ("objectName",)


def _isName(node: ast.AST, names: tuple[str, ...]) -> bool:
    return isinstance(node, ast.Name) and node.id in names


class _Finder:
    """Walks one file, knowing which expressions are Qt objects of which class."""

    def __init__(self, filename: str, widgets: dict[str, set[type]]):
        self.filename, self.widgets = filename, widgets
        self.found: list[str] = []
        self.selfAttributes: dict[str, set[type]] = {}
        self.locals: dict[str, set[type]] = {}
        self.parents: dict[ast.AST, ast.AST] = {}

    def classesOf(self, node: ast.AST) -> set[type]:
        if isinstance(node, ast.Attribute):
            if self._isUi(node.value):
                return self.widgets.get(node.attr, set())
            if isinstance(node.value, ast.Name) and node.value.id == "self":
                return self.selfAttributes.get(node.attr, set())
        if isinstance(node, ast.Name):
            return self.locals.get(node.id, set())
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and _isName(node.func.value, QT_MODULES):
            cls = _qt_class(node.func.attr)
            return {cls} if cls else set()
        return set()

    @staticmethod
    def _isUi(node: ast.AST) -> bool:
        return _isName(node, ("ui",)) or (isinstance(node, ast.Attribute) and node.attr == "ui")

    def _assigned(self, target: ast.AST, value: ast.AST, into: dict) -> None:
        if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple) and len(target.elts) == len(value.elts):
            for t, v in zip(target.elts, value.elts, strict=True):
                self._assigned(t, v, into)
            return
        classes = self.classesOf(value)
        if classes and isinstance(target, ast.Name):
            into.setdefault(target.id, set()).update(classes)
        if classes and isinstance(target, ast.Attribute) and _isName(target.value, ("self",)):
            self.selfAttributes.setdefault(target.attr, set()).update(classes)

    def run(self, tree: ast.AST) -> list[str]:
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                self.parents[child] = node
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    self._assigned(target, node.value, {})
        for function in [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]:
            self.locals = {}
            for node in ast.walk(function):
                if isinstance(node, ast.Assign):
                    for target in node.targets:
                        self._assigned(target, node.value, self.locals)
            for node in ast.walk(function):
                self.check(node)
        return sorted(set(self.found), key=lambda text: int(text.split(":")[1].split()[0]))

    def check(self, node: ast.AST) -> None:
        where = f"{self.filename}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "connect":
            first = node.args[0] if node.args else None
            if isinstance(first, ast.Constant) and isinstance(first.value, str) and "(" in first.value:
                self.found.append(f"{where} connects '{first.value}' by its string signature: PythonQt only")
        if not isinstance(node, ast.Attribute):
            return
        parent = self.parents.get(node)
        if node.attr in EVERY_QOBJECT and isinstance(parent, ast.Call) and parent.func is node:
            self.found.append(
                f"{where} calls {ast.unparse(node)}(): '{node.attr}' is a Qt property of every QObject, which "
                "PythonQt reads as an attribute (use .property())"
            )
            return
        for cls in self.classesOf(node.value):
            if cls.staticMetaObject.indexOfProperty(node.attr) < 0:
                continue
            pythonProperty = isinstance(getattr(cls, node.attr, None), QtCore.Property)
            parent = self.parents.get(node)
            called = isinstance(parent, ast.Call) and parent.func is node
            text = ast.unparse(node)
            if called:
                self.found.append(
                    f"{where} calls {text}(): '{node.attr}' is a Qt property of {cls.__name__}, "
                    "which PythonQt reads as an attribute"
                )
            elif not pythonProperty:
                use = "assigns" if isinstance(node.ctx, ast.Store) else "reads"
                self.found.append(
                    f"{where} {use} {text}: Qt property '{node.attr}' of {cls.__name__} as an "
                    "attribute works only in PythonQt (use its setter, or .property())"
                )


def portability_findings(source: str, filename: str, widgets: dict[str, set[type]]) -> list[str]:
    return _Finder(filename, widgets).run(ast.parse(source))


def test_widget_code_reads_and_writes_qt_properties_portably():
    widgets = ui_widget_classes()
    found = []
    for path in WIDGET_FILES:
        found += portability_findings(path.read_text(), path.relative_to(MODULE_DIR).as_posix(), widgets)
    assert not found, "\n".join(found)


def test_the_check_sees_the_widget_code():
    """Not vacuous: the files are read and their widgets are known by class."""
    widgets = ui_widget_classes()
    assert widgets["statusLabel"] == {QtWidgets.QLabel} and widgets["inputVolumeSelector"] == {qmrml.qMRMLNodeComboBox}
    assert any(path.name == "protocol_panel.py" for path in WIDGET_FILES)


CRAFTED = """
class Panel:
    def __init__(self, ui):
        self.ui = ui
        self.timer = qt.QTimer()
        self.ui.button.connect("clicked(bool)", self.onApply)
        self.ui.button.clicked.connect(self.onApply)

    def update(self, ready):
        self.ui.applyButton.enabled = ready
        self.ui.applyButton.setEnabled(ready)
        self.ui.statusLabel.text += "!"
        self.ui.statusLabel.setText(self.ui.statusLabel.property("text") + "!")
        rows = self.ui.table.rowCount()
        self.ui.table.setRowCount(0)
        combo, other = self.ui.combo, None
        combo.currentIndex = 2
        self.ui.section.collapsed = True
        self.ui.section.collapsed()
        wait = self.timer.interval

    def name(self, widget):
        return widget.objectName() + widget.property("objectName")
"""


def test_the_check_finds_pythonqt_only_idioms():
    widgets = {
        "button": {QtWidgets.QPushButton},
        "applyButton": {QtWidgets.QPushButton},
        "statusLabel": {QtWidgets.QLabel},
        "table": {QtWidgets.QTableWidget},
        "combo": {QtWidgets.QComboBox},
        "section": {ctk.ctkCollapsibleButton},
    }
    found = [" ".join(line.split()[:2]) for line in portability_findings(CRAFTED, "p.py", widgets)]
    assert found == [
        "p.py:6 connects",
        "p.py:10 assigns",
        "p.py:12 assigns",
        "p.py:14 calls",
        "p.py:17 assigns",
        "p.py:19 calls",
        "p.py:20 reads",
        "p.py:23 calls",
    ]


def test_ui_classes_come_from_every_ui_file(tmp_path):
    ui = tmp_path / "Other.ui"
    ui.write_text(
        '<ui version="4.0"><widget class="QWidget" name="Other"><widget class="QLineEdit" name="statusLabel"/>'
        "</widget></ui>"
    )
    classes = ui_widget_classes([*sorted((MODULE_DIR / "Resources" / "UI").glob("*.ui")), Path(ui)])
    assert classes["statusLabel"] == {QtWidgets.QLabel, QtWidgets.QLineEdit}
