"""PythonQt-only idioms made loud under PySide6.

PythonQt lets Python assign a Qt property as an attribute (``button.enabled = False``, ``label.text = "x"``).
PySide6 accepts the same line silently, as a new Python attribute, and the widget does not change: a test
would pass while the panel shows the wrong thing. Under the stand-in such an assignment raises, naming the
setter that works in both (``setEnabled``). Properties that placeholders define in Python (PySide6
``Property``) assign as in PythonQt and are left alone. Reading such an attribute (``label.text``) is
checked statically instead (Testing/widgets/test_portability.py): at run time it cannot be told from a call.
"""

from __future__ import annotations

from PySide6 import QtCore, QtGui, QtWidgets


class PythonQtIdiomError(AttributeError):
    """Widget code used a PythonQt-only idiom that PySide6 would silently ignore."""


def _setterName(name: str) -> str:
    return "set" + name[0].upper() + name[1:]


def _setattr(self, name, value):
    """Python's generic attribute assignment (data descriptors, then the instance's dict), after the check.

    The wrapped class's own C-level ``__setattr__`` cannot be called once replaced (CPython refuses to apply it
    to an instance whose type now has a Python one), so the generic rule is applied here.
    """
    descriptor = getattr(type(self), name, None)
    cppProperty = not isinstance(descriptor, QtCore.Property) and self.metaObject().indexOfProperty(name) >= 0
    if cppProperty and not name.startswith("_"):
        raise PythonQtIdiomError(
            f"{type(self).__name__}.{name} = ...: assigning a Qt property as an attribute works only in "
            f"PythonQt; call {_setterName(name)}(...) (PythonQt and PySide6) instead"
        )
    if isinstance(descriptor, QtCore.Property):
        if descriptor.fset is None:
            raise AttributeError(f"{type(self).__name__}.{name} is read-only")
        descriptor.fset(self, value)
    elif hasattr(type(descriptor), "__set__"):
        descriptor.__set__(self, value)
    else:
        self.__dict__[name] = value


_setattr.standIn = True


def qobjectClasses():
    """The QObject classes of QtCore, QtGui and QtWidgets, each defining its own ``__setattr__``."""
    for module in (QtCore, QtGui, QtWidgets):
        for name in dir(module):
            cls = getattr(module, name)
            if isinstance(cls, type) and issubclass(cls, QtCore.QObject) and "__setattr__" in cls.__dict__:
                yield cls


def guardPropertyAssignments(patch) -> int:
    """Make property assignments raise on every Qt QObject class (through ``patch``, a pytest MonkeyPatch)."""
    count = 0
    for cls in qobjectClasses():
        if not getattr(cls.__dict__["__setattr__"], "standIn", False):
            patch.setattr(cls, "__setattr__", _setattr)
            count += 1
    return count
