"""The Slicer stand-in itself: it loads every real .ui, and each of its safety nets can fail a test."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
import slicer
from PySide6 import QtWidgets

from Testing.conftest import MODULE_DIR
from Testing.qtstandin import dialogs, pictures, uiloader, user
from Testing.qtstandin.idioms import PythonQtIdiomError
from Testing.qtstandin.waiting import waitUntil

UI_FILES = sorted((MODULE_DIR / "Resources" / "UI").glob("*.ui"))


def test_there_are_ui_files_to_check():
    assert UI_FILES


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.name)
def test_every_ui_file_loads_with_a_placeholder_for_each_custom_widget(slicer_app, path):
    root = ET.parse(path).getroot()
    widget = uiloader.loadUi(path)
    ui = uiloader.childWidgetVariables(widget)
    for element in root.iter("widget"):
        built = getattr(ui, element.get("name"))
        expected = uiloader.PLACEHOLDERS.get(element.get("class")) or getattr(QtWidgets, element.get("class"))
        assert type(built) is expected, element.get("name")
    # Connections of the .ui are made: a scene given to the top widget reaches each widget connected to it.
    receivers = [c.findtext("receiver") for c in root.iter("connection") if c.findtext("slot").startswith("setMRML")]
    assert all(
        isinstance(getattr(ui, name), uiloader.qmrml.qMRMLWidget | uiloader.qmrml.qMRMLNodeComboBox)
        for name in receivers
    )
    if isinstance(widget, uiloader.qmrml.qMRMLWidget):
        widget.setMRMLScene(slicer.mrmlScene)
        assert all(getattr(ui, name).mrmlScene() is slicer.mrmlScene for name in receivers)
    if path.name in ("MedAnnotAssist.ui", "SegmentEditor.ui"):  # the files with scene-bound widgets
        assert receivers
    widget.deleteLater()


def _crafted_ui(tmp_path, body: str, connections: str = "") -> str:
    path = tmp_path / "Crafted.ui"
    path.write_text(
        '<?xml version="1.0" encoding="UTF-8"?><ui version="4.0"><class>Crafted</class>'
        f'<widget class="qMRMLWidget" name="Crafted"><layout class="QVBoxLayout" name="layout">{body}</layout>'
        f"</widget><connections>{connections}</connections></ui>"
    )
    return path


def test_a_custom_widget_without_placeholder_is_named(slicer_app, tmp_path):
    path = _crafted_ui(tmp_path, '<item><widget class="ctkDoubleRangeSlider" name="range"/></item>')
    with pytest.raises(uiloader.UiLoadError, match="Crafted.ui uses ctkDoubleRangeSlider, which the Qt stand-in"):
        uiloader.loadUi(path)


def test_a_connection_to_a_missing_slot_is_named(slicer_app, tmp_path):
    connection = (
        "<connection><sender>Crafted</sender><signal>mrmlSceneChanged(vtkMRMLScene*)</signal>"
        "<receiver>selector</receiver><slot>setScene(vtkMRMLScene*)</slot></connection>"
    )
    path = _crafted_ui(tmp_path, '<item><widget class="qMRMLNodeComboBox" name="selector"/></item>', connection)
    with pytest.raises(uiloader.UiLoadError, match="selector.setScene.*qMRMLNodeComboBox has no slot setScene"):
        uiloader.loadUi(path)


def test_a_section_collapsed_in_the_ui_hides_its_contents_until_expanded(slicer_app, tmp_path):
    section = (
        '<item><widget class="ctkCollapsibleButton" name="section"><property name="collapsed"><bool>true</bool>'
        '</property><layout class="QVBoxLayout" name="sectionLayout"><item><widget class="QPushButton" '
        'name="inside"/></item></layout></widget></item>'
    )
    widget = uiloader.loadUi(_crafted_ui(tmp_path, section))
    ui = uiloader.childWidgetVariables(widget)
    widget.show()
    assert ui.section.collapsed and ui.section.isVisible() and not ui.inside.isVisible()
    with pytest.raises(AssertionError, match="inside: cannot be clicked"):
        user.click(ui.inside)
    user.expand(ui.section)
    assert ui.inside.isVisible()
    widget.close()
    widget.deleteLater()


def test_assigning_a_qt_property_as_an_attribute_raises_naming_the_setter(slicer_app):
    import qt

    button = qt.QPushButton("Apply")
    with pytest.raises(PythonQtIdiomError, match=r"QPushButton.enabled = \.\.\..*call setEnabled\(\.\.\.\)"):
        button.enabled = False
    assert button.isEnabled()
    button.model = "plain Python attributes stay allowed"
    import ctk

    section = ctk.ctkCollapsibleButton()
    section.collapsed = True  # a placeholder's Python-defined property assigns as in PythonQt
    assert section.isCollapsed()


def test_an_unexpected_modal_dialog_fails_instead_of_blocking(slicer_app):
    import qt

    box = qt.QMessageBox()
    box.setWindowTitle("Discard the edits?")
    with pytest.raises(dialogs.UnexpectedDialogError, match="QMessageBox.exec: Discard the edits?"):
        box.exec()
    slicer_app.dialogs.answer(qt.QMessageBox.Yes, "")
    assert box.exec() == qt.QMessageBox.Yes
    assert qt.QFileDialog.getOpenFileName(None, "Open", "", "*.json") == ""  # PythonQt returns the path alone
    assert slicer_app.dialogs.opened[-1] == "QFileDialog.getOpenFileName: Open [*.json] in ''"


def test_an_exception_in_a_slot_is_reported_to_the_test(slicer_app):
    import qt

    timer = qt.QTimer()
    timer.setSingleShot(True)
    timer.timeout.connect(lambda: 1 / 0)
    timer.start(0)
    waitUntil(lambda: slicer_app.slotErrors, 2.0)
    assert any("ZeroDivisionError" in p for p in slicer_app.problems())
    slicer_app.slotErrors.clear()  # seen: the fixture would fail the test otherwise


def test_parameter_node_wrapper_binds_widgets_both_ways(slicer_app):
    import qt
    from slicer.parameterNodeWrapper import parameterNodeWrapper

    @parameterNodeWrapper
    class Parameters:
        volume: slicer.vtkMRMLScalarVolumeNode
        threshold: float = 0.5
        reader: str = "A"

    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScriptedModuleNode")
    parameters = Parameters(node)
    assert (parameters.volume, parameters.threshold, parameters.reader) == (None, 0.5, "A")
    assert node.GetParameter("threshold") == "0.5"  # defaults are written to the node
    gui = type("", (), {})()
    gui.selector = slicer.qMRMLNodeComboBox()
    gui.selector.nodeTypes = ["vtkMRMLScalarVolumeNode"]
    gui.selector.noneEnabled = True
    gui.selector.setMRMLScene(slicer.mrmlScene)
    gui.selector.setProperty("SlicerParameterName", "volume")
    gui.reader = qt.QLineEdit()
    gui.reader.setProperty("SlicerParameterName", "reader")
    tag = parameters.connectGui(gui)
    assert gui.reader.text() == "A"

    ct = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "CT")
    gui.selector.setCurrentNode(ct)  # the user picks the CT
    assert parameters.volume is ct and node.GetNodeReferenceID("volume") == ct.GetID()
    parameters.reader = "B"  # code changes the parameter: the field follows
    assert gui.reader.text() == "B"
    parameters.disconnectGui(tag)
    gui.reader.setText("C")
    assert parameters.reader == "B"


def test_parameter_types_the_stand_in_cannot_store_are_refused(slicer_app):
    from slicer.parameterNodeWrapper import parameterNodeWrapper

    with pytest.raises(TypeError, match=r"Parameters.weights: the parameterNodeWrapper stand-in .* list\[float\]"):

        @parameterNodeWrapper
        class Parameters:
            weights: list[float]


def test_pictures_go_to_the_user_guide_only_when_asked(slicer_app, tmp_path, monkeypatch):
    import qt

    label = qt.QLabel("Liver")
    monkeypatch.delenv(pictures.USER_GUIDE_SWITCH, raising=False)
    ordinary = pictures.Pictures.fromEnvironment(tmp_path / "run")
    assert ordinary.userGuide is None
    ordinary.save(label, "label", size=(120, 40))
    monkeypatch.setenv(pictures.USER_GUIDE_SWITCH, "1")
    monkeypatch.setattr(pictures, "USER_GUIDE_FOLDER", tmp_path / "docs-images")
    asked = pictures.Pictures.fromEnvironment(tmp_path / "asked")
    asked.save(label, "label", size=(120, 40))
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.png")) == [
        "asked/label.png",
        "docs-images/label.png",
        "run/label.png",
    ]


def test_an_error_shown_by_try_with_error_display_is_recorded_and_still_raised(slicer_app):
    """slicer.util.tryWithErrorDisplay is slicer-core's own: the message box is recorded, the error re-raised."""
    import qt

    def onApply():
        with slicer.util.tryWithErrorDisplay("Could not apply the protocol.", waitCursor=True):
            raise ValueError("no segmentation selected")

    button = qt.QPushButton("Apply")
    button.clicked.connect(onApply)
    button.click()
    [message] = slicer_app.app.takeMessages("error")
    assert message.text == "Could not apply the protocol.\n\nno segmentation selected"
    assert [type(e) for e in slicer_app.slotErrors] == [ValueError]
    assert qt.QApplication.overrideCursor() is None  # the wait cursor is gone
    slicer_app.slotErrors.clear()


def test_settings_live_in_the_test_folder(slicer_app, tmp_path_factory):
    settings = slicer.app.userSettings()
    settings.setValue("MedAnnotAssist/serverUrl", "https://queue.example.org")
    settings.sync()
    assert "qt-settings" in settings.fileName() and str(tmp_path_factory.getbasetemp()) in settings.fileName()
    assert slicer.app.settings().value("MedAnnotAssist/serverUrl") == "https://queue.example.org"


def test_an_exception_in_a_vtk_observer_is_reported_to_the_test(slicer_app):
    def onNodeAdded(caller, event):
        raise KeyError("structure")

    slicer.mrmlScene.AddObserver(slicer.mrmlScene.NodeAddedEvent, onNodeAdded)
    slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    assert [type(e) for e in slicer_app.slotErrors] == [KeyError]
    slicer_app.slotErrors.clear()


def test_user_actions_respect_the_widgets_state(slicer_app):
    import qt

    window = qt.QWidget()
    button = qt.QPushButton("Submit", window)
    pressed = []
    button.clicked.connect(lambda: pressed.append("click"))
    shortcut = qt.QShortcut(qt.QKeySequence("Ctrl+Return"), window)
    shortcut.activated.connect(lambda: pressed.append("shortcut"))
    window.show()
    user.click(button)
    user.pressShortcut(window, "Ctrl+Return")
    button.setEnabled(False)
    with pytest.raises(AssertionError, match="cannot be clicked"):
        user.click(button)
    assert pressed == ["click", "shortcut"]
    window.close()


def test_uninstalling_unloads_the_widgets_only(qt_app):
    """The library the other tests import stays one copy: only the module and widgets/ are unloaded."""
    import sys

    from MedAnnotAssistLib.core.engines import base
    from Testing.qtstandin import StandIn

    other = StandIn(qt_app).install()
    import MedAnnotAssistLib.widgets.protocol_panel  # noqa: F401  (loaded under the stand-in)

    other.uninstall()
    assert sys.modules["MedAnnotAssistLib.core.engines.base"] is base
    assert "MedAnnotAssistLib.widgets.protocol_panel" not in sys.modules
