"""Widget tests: the module's real widgets and .ui files on PySide6 (offscreen) behind the Slicer stand-in."""

from __future__ import annotations

import os

import pytest
from PySide6 import QtCore, QtWidgets

from Testing.conftest import MODULE_DIR
from Testing.qtstandin import StandIn
from Testing.qtstandin.pictures import Pictures

MODULE_FILE = MODULE_DIR / "MedAnnotAssist.py"


@pytest.fixture(scope="session")
def qt_app(tmp_path_factory):
    """The one QApplication of the test process, offscreen, with settings in a throwaway folder."""
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
    QtCore.QCoreApplication.setOrganizationName("MedAnnotAssistTests")
    QtCore.QCoreApplication.setApplicationName("Slicer")
    QtCore.QSettings.setDefaultFormat(QtCore.QSettings.IniFormat)
    folder = str(tmp_path_factory.mktemp("qt-settings"))
    QtCore.QSettings.setPath(QtCore.QSettings.IniFormat, QtCore.QSettings.UserScope, folder)
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    yield app
    for widget in app.topLevelWidgets():
        widget.close()
    app.processEvents()


@pytest.fixture(scope="package")
def standin(qt_app):
    """``qt``, ``ctk`` and the Slicer application stand-in, installed for the widget tests, removed after them."""
    installed = StandIn(qt_app).install()
    yield installed
    installed.uninstall()


@pytest.fixture
def slicer_app(standin):
    """A fresh scene as ``slicer.mrmlScene``; the test fails on an uncaught slot error, a Qt warning or an
    unused scripted dialog answer it left behind."""
    standin.newScene()
    yield standin
    standin.qapp.processEvents()
    problems = standin.problems()
    assert not problems, "\n".join(problems)


@pytest.fixture
def module_panel(slicer_app):
    """The MedAnnotAssist module's panel, built from its real .ui, set up and entered; closed after the test."""
    opened = slicer_app.openModule(MODULE_FILE)
    yield opened
    opened.close()


@pytest.fixture
def pictures(tmp_path) -> Pictures:
    """PNGs of panels in the test's folder; also in docs/images/ with MEDANNOT_USER_GUIDE_PICTURES=1."""
    return Pictures.fromEnvironment(tmp_path / "pictures")
