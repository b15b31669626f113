"""A stand-in for Slicer's Qt layer, so that the module's real widget code runs in tests on real Qt widgets.

Slicer's PythonQt, CTK and qMRML widgets cannot be installed outside Slicer. Under this stand-in:

- ``qt`` is PySide6 (``qt.py``), with PythonQt's answers where they differ and our code relies on them;
- ``ctk`` and ``slicer.qMRML*`` are placeholders (``ctk.py``, ``qmrml.py``) with the part of the real API our
  .ui files and widgets use, working on a real slicer-core scene;
- ``slicer`` is slicer-core's own package (MRML, ``slicer.util``) plus ``slicer.app`` and the ``slicer.util``
  functions that need the application (``slicer_app.py``), ``slicer.i18n``, ``slicer.ScriptedLoadableModule``
  and ``slicer.parameterNodeWrapper`` (``i18n.py``, ``scripted_module.py``, ``parameter_nodes.py``);
- the module's real .ui files load through QUiLoader (``uiloader.py``); modal dialogs are answered from the
  test's script (``dialogs.py``); PythonQt-only idioms that PySide6 would ignore raise (``idioms.py``);
  ``user.py`` clicks, chooses and presses shortcuts as a user; ``pictures.py`` saves PNGs of panels.

Not covered: slice and 3D views, the Segment Editor's effects, Slicer's module manager and reloading,
translations, and every PythonQt behaviour our code does not use. ``StandIn.install()`` changes this
process only until ``uninstall()``; the fixtures in Testing/widgets/conftest.py do both.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PySide6 import QtCore, QtWidgets

from . import ctk, dialogs, i18n, idioms, parameter_nodes, qmrml, slicer_app

# the scripted module (imported by file name) and the widgets, which import qt: unloaded with the stand-in.
# Matched by name, not by prefix: "MedAnnotAssist" is a prefix of every MedAnnotAssistLib module, and
# unloading those would give later tests a second copy of every class (an EngineError not caught as one).
MODULES_LOADED_UNDER_THE_STANDIN = ("MedAnnotAssist", "MedAnnotAssistLib.widgets")
QT_WARNINGS_IGNORED = ("propagateSizeHints",)  # the offscreen platform says it cannot do this; harmless


@dataclass
class ModuleUnderTest:
    """A scripted module as Slicer shows it: the module object, its panel and its widget (set up and entered)."""

    module: types.ModuleType
    info: object  # the ModuleStandIn the module class filled (title, categories, help ...)
    panel: QtWidgets.QWidget
    widget: object
    closed: bool = field(default=False)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.panel._entered = False
        self.widget.exit()
        self.widget.cleanup()
        self.panel.close()
        self.panel.deleteLater()
        QtWidgets.QApplication.processEvents()


class StandIn:
    """The stand-in in this process. ``install()`` once, ``newScene()`` per test, ``uninstall()`` at the end."""

    def __init__(self, qapp: QtWidgets.QApplication):
        self.qapp = qapp
        self.app: slicer_app.SlicerApplicationStandIn | None = None
        self.context = None
        self.slotErrors: list[BaseException] = []
        self.qtWarnings: list[str] = []
        self._patch: pytest.MonkeyPatch | None = None
        self._previousHandler = None

    @property
    def dialogs(self) -> dialogs.ModalDialogs:
        return dialogs.current()

    def install(self) -> StandIn:
        patch = self._patch = pytest.MonkeyPatch()
        patch.setitem(sys.modules, "qt", importlib.import_module(f"{__name__}.qt"))
        patch.setitem(sys.modules, "ctk", ctk)
        import slicer  # slicer-core's package: MRML, vtk classes, slicer.util

        scripted = importlib.import_module(f"{__name__}.scripted_module")  # imports qt: after it is in place
        for name, module in (
            ("i18n", i18n),
            ("ScriptedLoadableModule", scripted),
            ("parameterNodeWrapper", parameter_nodes),
        ):
            patch.setitem(sys.modules, f"slicer.{name}", module)
            patch.setattr(slicer, name, module, raising=False)
        for cls in qmrml.PLACEHOLDERS:
            patch.setattr(slicer, cls.__name__, cls, raising=False)
        patch.setattr(slicer, "modules", types.SimpleNamespace(), raising=False)
        patch.setattr(slicer, "app", None, raising=False)
        patch.setattr(slicer, "mrmlScene", None, raising=False)
        patch.setattr(slicer.util, "pip_install", _noInstall, raising=False)
        idioms.guardPropertyAssignments(patch)
        for cls in _dialogClasses():
            patch.setattr(cls, "exec", _execDialog)
            patch.setattr(cls, "exec_", _execDialog, raising=False)
        patch.setattr(sys, "excepthook", self._onUncaught)
        self._previousHandler = QtCore.qInstallMessageHandler(self._onQtMessage)
        return self

    def newScene(self):
        """A fresh headless scene as ``slicer.mrmlScene`` and a fresh ``slicer.app``; returns its SceneContext."""
        import slicer

        from MedAnnotAssistLib.mrml.scene import SceneContext

        self.context = SceneContext.headless()
        self.app = slicer_app.SlicerApplicationStandIn(self.qapp, self.context)
        slicer.app, slicer.mrmlScene = self.app, self.context.scene
        slicer.modules = types.SimpleNamespace()
        for name, function in slicer_app.utilOverrides(self.app).items():
            self._patch.setattr(slicer.util, name, function)
        dialogs.reset()
        self.slotErrors.clear()
        self.qtWarnings.clear()
        return self.context

    def loadModule(self, path: str | Path) -> types.ModuleType:
        """Import a scripted module file by path, as Slicer does (under its file name)."""
        path = Path(path)
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)
        return module

    def openModule(self, path: str | Path, size: tuple[int, int] = (420, 720)) -> ModuleUnderTest:
        """Load the module, fill its metadata, build its panel (``setup``), show it and ``enter`` it."""
        from .scripted_module import ModulePanel, ModuleStandIn

        module = self.loadModule(path)
        name = Path(path).stem
        info = ModuleStandIn(str(path))
        getattr(module, name)(info)
        panel = ModulePanel()
        panel.setMRMLScene(self.context.scene)
        widget = getattr(module, f"{name}Widget")(panel)
        widget.setup()
        panel.resize(*size)
        panel.show()
        panel._entered = True
        widget.enter()
        self.qapp.processEvents()
        return ModuleUnderTest(module, info, panel, widget)

    def uninstall(self) -> None:
        QtCore.qInstallMessageHandler(self._previousHandler)
        if self._patch is not None:
            self._patch.undo()
        for name in list(sys.modules):
            if any(name == loaded or name.startswith(loaded + ".") for loaded in MODULES_LOADED_UNDER_THE_STANDIN):
                del sys.modules[name]

    # -- what goes wrong where a test cannot see it -------------------------------------------------------
    def _onUncaught(self, kind, error, trace) -> None:
        """An exception raised in a slot or a VTK observer (Qt and VTK print it and carry on; tests must not)."""
        self.slotErrors.append(error.with_traceback(trace))
        sys.__excepthook__(kind, error, trace)

    def _onQtMessage(self, kind, context, message: str) -> None:
        if kind != QtCore.QtMsgType.QtDebugMsg and not any(text in message for text in QT_WARNINGS_IGNORED):
            self.qtWarnings.append(message)

    def problems(self) -> list[str]:
        """What a test must not leave behind: uncaught slot errors, Qt warnings, unanswered scripted dialogs."""
        found = [f"uncaught in a slot or observer: {e!r}" for e in self.slotErrors]
        found += [f"Qt warning: {w}" for w in self.qtWarnings]
        if self.dialogs.unanswered:
            found.append(f"scripted answers no dialog asked for: {self.dialogs.unanswered}")
        return found


def _noInstall(requirements) -> None:
    raise RuntimeError(f"the Slicer stand-in does not install packages (asked for {requirements})")


def _dialogClasses():
    for name in dir(QtWidgets):
        cls = getattr(QtWidgets, name)
        if isinstance(cls, type) and issubclass(cls, QtWidgets.QDialog) and "exec" in cls.__dict__:
            yield cls


def _execDialog(self, *args):
    return dialogs.answerDialog(f"{type(self).__name__}.exec: {self.windowTitle()}")
