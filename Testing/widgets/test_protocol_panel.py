"""The module's protocol panel, built from its real .ui with real Qt widgets, driven as a radiologist would."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest
import SimpleITK as sitk
import slicer
from PySide6 import QtGui

from MedAnnotAssistLib.core.protocol import load_protocol
from MedAnnotAssistLib.mrml.segmentation import setSegmentMask
from MedAnnotAssistLib.mrml.volumes import loadVolume
from Testing.conftest import MODULE_DIR
from Testing.qtstandin import qmrml, user
from Testing.qtstandin.waiting import waitUntil

PROTOCOLS = MODULE_DIR / "Resources" / "Protocols"
NAME_COLUMN, STATE_COLUMN = 1, 3
LIVER_LABEL = 5  # TotalSegmentator's liver in example_seg


def table_rows(table) -> list[tuple[str, str]]:
    """(structure, state) of each row, as shown."""
    return [(table.item(r, NAME_COLUMN).text(), table.item(r, STATE_COLUMN).text()) for r in range(table.rowCount())]


def protocol_index(combo, protocol_id: str) -> int:
    return next(i for i in range(combo.count()) if str(combo.itemData(i)).endswith(f"{protocol_id}.json"))


def has_colour(path, hex_colour: str) -> bool:
    image = QtGui.QImage(str(path)).convertToFormat(QtGui.QImage.Format_RGB888)
    pixels = np.frombuffer(image.constBits(), np.uint8).reshape(image.height(), image.bytesPerLine())
    rgb = pixels[:, : image.width() * 3].reshape(image.height(), image.width(), 3)
    return bool((rgb == QtGui.QColor(hex_colour).getRgb()[:3]).all(axis=2).any())


@pytest.fixture
def sample_ct(slicer_app, sample_dir):
    return loadVolume(slicer_app.context, sample_dir / "example_ct_sm.nii.gz", name="Abdomen CT")


def test_entering_the_module_picks_the_scene_volume_and_lists_the_bundled_protocols(sample_ct, module_panel):
    ui = module_panel.widget.ui
    assert module_panel.info.title == "MedAnnotAssist" and "Segmentation" in module_panel.info.categories
    # The parameter node chose the scene's volume and the binding shows it in the selector.
    assert module_panel.widget._parameterNode.inputVolume.GetID() == sample_ct.GetID()
    assert ui.inputVolumeSelector.currentNode().GetID() == sample_ct.GetID()
    assert ui.segmentationSelector.currentNode() is None
    labels = [ui.protocolComboBox.itemText(i) for i in range(ui.protocolComboBox.count())]
    bundled = [json.loads(path.read_text()) for path in sorted(PROTOCOLS.glob("*.json"))]
    assert len(bundled) == 4 and labels[:4] == [f"{p['title']} ({p['id']} v{p['version']})" for p in bundled]
    assert labels[4:] == ["", "Load from file..."]  # a separator, then the file dialog
    assert ui.protocolComboBox.currentIndex() == -1
    assert not ui.applyProtocolButton.isEnabled()  # no protocol chosen yet


def test_apply_protocol_draw_and_mark_absent_on_the_sample_ct(
    sample_ct, module_panel, slicer_app, sample_dir, pictures
):
    ui, widget = module_panel.widget.ui, module_panel.widget
    assert ui.protocolCollapsibleButton.collapsed and not ui.applyProtocolButton.isVisible()  # below the queue's
    user.expand(ui.protocolCollapsibleButton)
    user.expand(ui.structuresCollapsibleButton)
    protocol = load_protocol(PROTOCOLS / "abdominal-organs.json")
    editor = qmrml.qMRMLSegmentEditorWidget()  # the Segment Editor module's widget, as Slicer exposes it
    slicer.modules.SegmentEditorWidget = types.SimpleNamespace(editor=editor)

    user.choose(ui.protocolComboBox, protocol_index(ui.protocolComboBox, "abdominal-organs"))
    assert "14 structures (6 required)" in ui.protocolInfoLabel.text()
    assert widget._parameterNode.protocolPath.endswith("abdominal-organs.json")
    assert ui.applyProtocolButton.isEnabled()

    user.click(ui.applyProtocolButton)
    node = widget._parameterNode.segmentation
    assert node is not None and ui.segmentationSelector.currentNode().GetID() == node.GetID()
    assert table_rows(ui.structuresTable) == [(s.name, "Pending") for s in protocol.structures]
    assert ui.statusLabel.text().startswith("0/14 complete — not ready to submit:")
    assert ui.checkButton.isEnabled() and ui.markAbsentButton.isEnabled()

    # The radiologist draws the liver (here: TotalSegmentator's real liver); the panel re-checks by itself.
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(sample_dir / "example_seg.nii.gz")))
    segments = widget.logic.structureSegments(protocol, node)
    setSegmentMask(node, segments["liver"], labels == LIVER_LABEL)
    liver_row = [s.id for s in protocol.structures].index("liver")
    waitUntil(lambda: ui.structuresTable.item(liver_row, STATE_COLUMN).text() == "Complete", 10.0)
    assert ui.statusLabel.text().startswith("1/14 complete — not ready to submit:")

    # Clicking a row selects its segment in the Segment Editor; double-clicking opens the Segment Editor.
    user.clickCell(ui.structuresTable, liver_row, NAME_COLUMN)
    assert editor.currentSegmentID() == segments["liver"]
    assert editor.segmentationNode() is node and editor.sourceVolumeNode() is sample_ct
    gallbladder_row = [s.id for s in protocol.structures].index("gallbladder")
    user.clickCell(ui.structuresTable, gallbladder_row, NAME_COLUMN, double=True)
    assert slicer_app.app.selectedModules == ["SegmentEditor"]
    assert editor.currentSegmentID() == segments["gallbladder"]

    # The gallbladder (optional) is declared absent with the row selected.
    ui.structuresTable.selectRow(gallbladder_row)
    user.click(ui.markAbsentButton)
    assert table_rows(ui.structuresTable)[gallbladder_row] == ("Gallbladder", "Absent")
    assert ui.statusLabel.text().startswith("2/14 complete — not ready to submit:")
    assert slicer_app.app.takeMessages() == []

    ui.structuresTable.clearSelection()
    ui.structuresTable.scrollToTop()
    section = ui.structuresCollapsibleButton
    path = pictures.save(section, "protocol-tool-structures")
    image = QtGui.QImage(str(path))
    assert (image.width(), image.height()) == (section.width(), section.height())
    assert has_colour(path, protocol.structure("liver").color)  # the table's colour swatches are in the picture


def test_a_broken_protocol_file_is_refused_with_its_problems_named(module_panel, slicer_app, tmp_path):
    ui = module_panel.widget.ui
    user.expand(ui.protocolCollapsibleButton)
    user.choose(ui.protocolComboBox, protocol_index(ui.protocolComboBox, "lung-nodule"))
    broken = json.loads((PROTOCOLS / "abdominal-organs.json").read_text())
    broken["structures"][0]["color"] = "liver-red"
    path = tmp_path / "broken-protocol.json"
    path.write_text(json.dumps(broken))

    slicer_app.dialogs.answer(str(path))  # what the user picks in the file dialog
    user.choose(ui.protocolComboBox, ui.protocolComboBox.count() - 1)  # "Load from file..."

    assert slicer_app.dialogs.opened == [
        f"QFileDialog.getOpenFileName: Load annotation protocol [Protocols (*.json);;All files (*)] in '{PROTOCOLS}'"
    ]
    [message] = slicer_app.app.takeMessages("error")
    assert message.windowTitle == "Invalid protocol"
    assert message.text.startswith("Protocol broken-protocol.json cannot be used:")
    assert "structures[0].color" in message.text
    # The choice falls back to the protocol in use.
    assert ui.protocolComboBox.currentText().endswith("(lung-nodule v1.1.0)")
    assert module_panel.widget._parameterNode.protocolPath.endswith("lung-nodule.json")
