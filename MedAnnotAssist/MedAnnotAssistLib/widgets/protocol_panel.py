"""The protocol panel: choose a protocol, apply it to a segmentation, follow each structure's state.

Plain Python around the module's .ui widgets and logic. ``core.protocol`` is imported at point of use:
it needs jsonschema, which the logic installs on the first protocol load.
"""

from __future__ import annotations

import html
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import qt
import slicer
from slicer.i18n import tr as _
from slicer.util import VTKObservationMixin

if TYPE_CHECKING:
    from ..core.protocol import Protocol, Structure
    from ..core.protocol_check import ProtocolCheck, RuleResult, StructureCheck

LOAD_FROM_FILE = "MedAnnotAssist:load-from-file"  # item data of the "Load from file..." entry
RECHECK_DELAY_MS = 500
MAX_REASONS_SHOWN = 8
COLOR_COLUMN, NAME_COLUMN, REQUIRED_COLUMN, STATE_COLUMN, RULES_COLUMN = range(5)
STATE_COLORS = {"pending": "#808080", "drafted": "#e07000", "complete": "#2a9d3a", "absent": "#2f6bd8"}


def stateWords() -> dict[str, str]:
    return {"pending": _("Pending"), "drafted": _("Drafted"), "complete": _("Complete"), "absent": _("Absent")}


def _mark(result: RuleResult) -> str:
    if result.passed is None:
        return "?"
    return "✓" if result.passed else ("✗" if result.severity == "error" else "⚠")


def _ruleOrder(result: RuleResult) -> int:
    """Failing rules first: blocking, then warnings, then rules that could not be evaluated."""
    if result.passed is False:
        return 0 if result.blocks else 1
    return 2 if result.passed is None else 3


def ruleText(result: RuleResult, structure: Structure, protocol: Protocol) -> str:
    """One rule result in a few words, e.g. ``volume 1043 ml ✓`` or ``2 components ✗ (max 1)``."""
    rules, value = structure.rules, result.value
    if result.passed is None or value is None:
        return f"{result.message} {_mark(result)}"
    if result.rule == "volumeMl":
        text = _("volume {volume} ml").format(volume=f"{value:.0f}" if value >= 10 else f"{value:.2g}")
        low, high = rules.volume_ml_min or 0, rules.volume_ml_max
        bounds = f"{low:g}–{high:g}" if high is not None else f"≥ {low:g}"
        expected = _("expected {bounds} ml").format(bounds=bounds)
    elif result.rule == "maxComponents":
        text = _("1 component") if value == 1 else _("{count} components").format(count=int(value))
        expected = _("max {count}").format(count=rules.max_components)
    elif result.rule in ("inside", "outside"):
        ref = rules.inside if result.rule == "inside" else rules.outside
        words = _("{fraction} inside {other}") if result.rule == "inside" else _("{fraction} overlap with {other}")
        text = words.format(fraction=f"{value:.0%}", other=protocol.structure(ref.structure).name)
        limit = _("min {fraction}") if result.rule == "inside" else _("max {fraction}")
        expected = limit.format(fraction=f"{ref.fraction:.0%}")
    elif result.rule == "laterality":
        sides = {"right": _("right"), "left": _("left")}
        text = _("{side} side").format(side=sides["right" if value > 0 else "left"])  # RAS: +x is patient's right
        expected = _("expected {side}").format(side=sides[rules.laterality.side])
    else:
        return f"{result.message} {_mark(result)}"
    return f"{text} {_mark(result)}" + (f" ({expected})" if result.passed is False else "")


def structureToolTip(structure: Structure) -> str:
    """Instructions, DICOM codes and TG-263 name of a structure."""
    t = structure.terminology
    labels = (_("Category"), _("Type"), _("Modifier"), _("Region"), _("Region modifier"))
    codes = (t.category, t.type, t.type_modifier, t.anatomic_region, t.anatomic_region_modifier)
    lines = [structure.instructions] if structure.instructions else []
    lines += [f"{label}: {c.meaning} ({c.scheme} {c.value})" for label, c in zip(labels, codes, strict=True) if c]
    if structure.tg263:
        lines.append(_("TG-263 name: {name}").format(name=structure.tg263))
    return "\n".join(lines)


def protocolInfoHtml(protocol: Protocol) -> str:
    counts = {"structures": len(protocol.structures), "required": sum(s.required for s in protocol.structures)}
    facts = _("{structures} structures ({required} required), {modality}, {readers} reader(s) per case").format(
        modality=html.escape(protocol.modality), readers=protocol.readers_per_case, **counts
    )
    description = f"<br>{html.escape(protocol.description)}" if protocol.description else ""
    return f"<b>{html.escape(protocol.title)}</b> — {html.escape(protocol.label)}<br>{facts}{description}"


def _item(text: str = "", toolTip: str = "", color: str | None = None):
    item = qt.QTableWidgetItem(text)
    item.setToolTip(toolTip)
    if color:
        item.setForeground(qt.QBrush(qt.QColor(color)))
    return item


class ProtocolPanel(VTKObservationMixin):
    """Drives the Protocol and Structures sections of the module's .ui."""

    def __init__(self, ui, logic):
        VTKObservationMixin.__init__(self)
        self.ui = ui
        self.logic = logic
        self.protocol: Protocol | None = None
        self.protocolPath: str | None = None
        self.lastCheck: ProtocolCheck | None = None
        self._parameterNode = None
        self._observedSegmentationId: str | None = None
        self._checking = False  # the check writes status tags, which fire SegmentModified
        self._previousProtocolIndex = -1
        self._recheckTimer = qt.QTimer()
        self._recheckTimer.setSingleShot(True)
        self._recheckTimer.setInterval(RECHECK_DELAY_MS)
        self._recheckTimer.timeout.connect(lambda: self.refresh(interactive=False))
        self._statusText = ""

        # New-style signals and setters only: the same code runs on Slicer's PythonQt and on PySide6 in tests.
        self.populateProtocols()
        self.ui.protocolComboBox.activated.connect(self.onProtocolActivated)
        self.ui.applyProtocolButton.clicked.connect(self.onApplyProtocol)
        self.ui.checkButton.clicked.connect(self.onCheck)
        self.ui.markAbsentButton.clicked.connect(self.onMarkAbsent)
        self.ui.structuresTable.cellClicked.connect(lambda row, column: self.selectSegment(row, False))
        self.ui.structuresTable.cellDoubleClicked.connect(lambda row, column: self.selectSegment(row, True))

    def cleanup(self) -> None:
        self._recheckTimer.stop()
        self.removeObservers()

    def setParameterNode(self, parameterNode) -> None:
        """None stops observing (module left or scene closing); a node restores protocol and segmentation."""
        self._parameterNode = parameterNode
        if parameterNode is None:
            self._recheckTimer.stop()
            self.observeSegmentation(None)
        else:
            self.updateFromParameterNode()

    def updateFromParameterNode(self) -> None:
        parameterNode = self._parameterNode
        if parameterNode is None:
            return
        changed = False
        if parameterNode.protocolPath and parameterNode.protocolPath != self.protocolPath:
            changed = self.selectProtocolPath(parameterNode.protocolPath, interactive=False, refresh=False)
        node = self.segmentationNode()
        if (node.GetID() if node else None) != self._observedSegmentationId:
            self.observeSegmentation(node)
            changed = True
        if changed:
            self.refresh(interactive=False)
        self.updateButtons()

    def segmentationNode(self):
        return self._parameterNode.segmentation if self._parameterNode else None

    def observeSegmentation(self, node) -> None:
        self.removeObservers(self.onSegmentationModified)
        self._observedSegmentationId = node.GetID() if node else None
        if node is None:
            return
        segmentation = slicer.vtkSegmentation
        for event in (segmentation.SegmentModified, segmentation.RepresentationModified, segmentation.SegmentRemoved):
            self.addObserver(node, event, self.onSegmentationModified)

    def onSegmentationModified(self, caller, event) -> None:
        if not self._checking and self.protocol is not None:
            self._recheckTimer.start()  # restarts while the user keeps editing

    def updateButtons(self) -> None:
        parameterNode = self._parameterNode
        hasTarget = bool(parameterNode and (parameterNode.inputVolume or parameterNode.segmentation))
        self.ui.applyProtocolButton.setEnabled(self.protocol is not None and hasTarget)
        hasSegments = self.protocol is not None and self.segmentationNode() is not None
        self.ui.checkButton.setEnabled(hasSegments)
        self.ui.markAbsentButton.setEnabled(hasSegments)

    def populateProtocols(self) -> None:
        combo = self.ui.protocolComboBox
        combo.clear()
        choices = self.logic.bundledProtocolChoices()
        for label, path in choices:
            combo.addItem(label, path)
        combo.insertSeparator(len(choices))
        combo.addItem(_("Load from file..."), LOAD_FROM_FILE)
        self._setComboIndex(-1)

    def _setComboIndex(self, index: int) -> None:
        combo = self.ui.protocolComboBox
        wasBlocked = combo.blockSignals(True)
        combo.setCurrentIndex(index)
        combo.blockSignals(wasBlocked)
        self._previousProtocolIndex = index

    def onProtocolActivated(self, index: int) -> None:
        path = self.ui.protocolComboBox.itemData(index)
        if path == LOAD_FROM_FILE:
            folder = str(Path(self.protocolPath).parent) if self.protocolPath else ""
            path = qt.QFileDialog.getOpenFileName(
                slicer.util.mainWindow(), _("Load annotation protocol"), folder, _("Protocols (*.json);;All files (*)")
            )
            if not path:
                self._setComboIndex(self._previousProtocolIndex)
                return
        self.selectProtocolPath(path, interactive=True)

    def selectProtocolPath(self, path: str, interactive: bool, refresh: bool = True) -> bool:
        """Load a protocol, show it in the combo box and the table; False if it cannot be used."""
        protocol = self.loadProtocol(path, interactive)
        if protocol is None:
            self._setComboIndex(self._previousProtocolIndex)
            return False
        combo = self.ui.protocolComboBox
        index = combo.findData(path)
        if index < 0:  # a protocol file from outside the bundle goes just above the separator
            index = combo.findData(LOAD_FROM_FILE) - 1
            combo.insertItem(index, f"{protocol.title} ({protocol.id} v{protocol.version})", path)
        self._setComboIndex(index)
        self.protocol, self.protocolPath = protocol, path
        self.ui.protocolInfoLabel.setText(protocolInfoHtml(protocol))
        if self._parameterNode is not None and self._parameterNode.protocolPath != path:
            self._parameterNode.protocolPath = path
        if refresh:
            self.refresh(interactive=False)
        self.updateButtons()
        return True

    def loadProtocol(self, path: str, interactive: bool) -> Protocol | None:
        """The validated protocol, or None after telling the user (a dialog) or the log what is wrong."""
        try:
            return self.logic.loadProtocol(path)  # installs jsonschema on first use
        except Exception as error:  # ProtocolError, or the installation was declined or failed
            problems = getattr(error, "problems", None) or []
            lines = [f"{problem.path}: {problem.message}" for problem in problems] or [str(error)]
            heading = _("Protocol {file} cannot be used:").format(file=Path(path).name)
            if interactive:
                slicer.util.errorDisplay(heading + "\n\n" + "\n".join(lines), windowTitle=_("Invalid protocol"))
            else:
                logging.warning(f"{heading} {'; '.join(lines)}")
                self.ui.protocolInfoLabel.setText(html.escape(heading))
            return None

    def onApplyProtocol(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Could not apply the protocol."), waitCursor=True):
            parameterNode = self._parameterNode
            if self.protocol is None or parameterNode is None:
                return
            node, applied = self.logic.applyProtocol(
                self.protocol, parameterNode.segmentation, parameterNode.inputVolume
            )
            self.observeSegmentation(node)  # before the parameter node changes, so that it does not re-check
            parameterNode.segmentation = node
            self.refresh(interactive=True)
            if applied.extra:
                self.setStatus(
                    self._statusText + "\n" + applied.summary(), self.lastCheck.ready if self.lastCheck else None
                )
            self.updateButtons()

    def onCheck(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Could not check the segmentation."), waitCursor=True):
            self.refresh(interactive=True)

    def onMarkAbsent(self) -> None:
        """Declare the selected structures absent; if all of them already are, undo it."""
        node = self.segmentationNode()
        rows = sorted({index.row() for index in self.ui.structuresTable.selectionModel().selectedRows()})
        structureIds = [self.structureIdAt(row) for row in rows]
        if self.protocol is None or node is None or not structureIds:
            return
        states = {s.structure_id: s.state for s in self.lastCheck.structures} if self.lastCheck else {}
        undo = all(states.get(structureId) == "absent" for structureId in structureIds)
        refused = []
        for structureId in structureIds:
            try:
                self.logic.declareAbsent(self.protocol, node, structureId, absent=not undo)
            except (ValueError, KeyError) as error:
                refused.append(str(error.args[0]) if error.args else str(error))
        self.refresh(interactive=False)
        if refused:
            slicer.util.errorDisplay("\n".join(refused), windowTitle=_("Cannot mark as absent"))

    def structureIdAt(self, row: int) -> str | None:
        item = self.ui.structuresTable.item(row, NAME_COLUMN)
        return item.data(qt.Qt.UserRole) if item else None

    def selectSegment(self, row: int, openEditor: bool) -> None:
        """Make the row's segment current in the Segment Editor (opened on double-click)."""
        node, structureId = self.segmentationNode(), self.structureIdAt(row)
        if self.protocol is None or node is None or structureId is None:
            return
        segmentId = self.logic.structureSegments(self.protocol, node).get(structureId)
        if segmentId is None:
            return
        volume = self._parameterNode.inputVolume if self._parameterNode else None
        if openEditor:
            slicer.util.selectModule("SegmentEditor")
        if hasattr(slicer.modules, "SegmentEditorWidget") and slicer.modules.SegmentEditorWidget.editor is not None:
            editor = slicer.modules.SegmentEditorWidget.editor
            if editor.segmentationNodeID() != node.GetID():
                editor.setSegmentationNode(node)
            if volume is not None and not editor.sourceVolumeNodeID():
                editor.setSourceVolumeNode(volume)
            editor.setCurrentSegmentID(segmentId)
            return
        # The Segment Editor widget is not created yet: its parameter node carries the selection to it.
        editorNode = slicer.mrmlScene.GetSingletonNode("SegmentEditor", "vtkMRMLSegmentEditorNode")
        if editorNode is not None:
            editorNode.SetAndObserveSegmentationNode(node)
            if volume is not None and editorNode.GetSourceVolumeNode() is None:
                editorNode.SetAndObserveSourceVolumeNode(volume)
            editorNode.SetSelectedSegmentID(segmentId)

    def refresh(self, interactive: bool) -> ProtocolCheck | None:
        """Check the segmentation against the protocol and show the result; errors raise if interactive."""
        self._recheckTimer.stop()
        node = self.segmentationNode()
        self.lastCheck = None
        if self.protocol is None:
            self.ui.structuresTable.setRowCount(0)
            self.setStatus(_("Choose a protocol."), None)
            return None
        if node is None or not self.logic.structureSegments(self.protocol, node):
            self.showStructures(None)
            self.setStatus(_("Press Apply protocol to create the segments of this protocol."), None)
            return None
        self._checking = True
        try:
            result = self.logic.check(self.protocol, node)
        except (ValueError, KeyError, RuntimeError) as error:
            if interactive:
                raise
            self.setStatus(_("Could not check the segmentation: {error}").format(error=error), False)
            return None
        finally:
            self._checking = False
        self.lastCheck = result
        self.showStructures(result)
        self.setStatus(self.summaryText(result), result.ready)
        return result

    def setStatus(self, text: str, ready: bool | None) -> None:
        self._statusText = text  # kept here: reading a label's text differs between PythonQt and PySide6
        self.ui.statusLabel.setText(text)
        color = {True: STATE_COLORS["complete"], False: "#c0392b"}.get(ready)
        self.ui.statusLabel.setStyleSheet(f"color: {color}" if color else "")

    def summaryText(self, result: ProtocolCheck) -> str:
        """``5/10 complete — ready to submit``, or the blocking reasons."""
        done = sum(s.state in ("complete", "absent") for s in result.structures)
        counts = {"done": done, "total": len(result.structures)}
        if result.ready:
            text = _("{done}/{total} complete — ready to submit").format(**counts)
        else:
            reasons = result.blocking_messages()
            text = _("{done}/{total} complete — not ready to submit:").format(**counts)
            text += "".join(f"\n• {reason}" for reason in reasons[:MAX_REASONS_SHOWN])
            if len(reasons) > MAX_REASONS_SHOWN:
                text += "\n" + _("… and {count} more").format(count=len(reasons) - MAX_REASONS_SHOWN)
        if result.extra_segments:
            text += "\n" + _("Segments not in the protocol: {names}").format(names=", ".join(result.extra_segments))
        return text

    def showStructures(self, result: ProtocolCheck | None) -> None:
        """One row per protocol structure; states from ``result`` (pending when there is none)."""
        table, protocol = self.ui.structuresTable, self.protocol
        checks = {s.structure_id: s for s in result.structures} if result else {}
        table.setRowCount(len(protocol.structures))
        for row, structure in enumerate(protocol.structures):
            self.fillRow(row, structure, checks.get(structure.id))
        for column in (COLOR_COLUMN, NAME_COLUMN, REQUIRED_COLUMN, STATE_COLUMN):
            table.resizeColumnToContents(column)

    def fillRow(self, row: int, structure: Structure, check: StructureCheck | None) -> None:
        table = self.ui.structuresTable
        swatch = _item(toolTip=structure.color)
        swatch.setBackground(qt.QBrush(qt.QColor(structure.color)))
        table.setItem(row, COLOR_COLUMN, swatch)
        name = _item(structure.name, structureToolTip(structure))
        name.setData(qt.Qt.UserRole, structure.id)
        table.setItem(row, NAME_COLUMN, name)
        requiredTip = _("Required") if structure.required else _("Optional: may be marked absent")
        required = _item("*" if structure.required else "", requiredTip)
        required.setTextAlignment(qt.Qt.AlignCenter)
        table.setItem(row, REQUIRED_COLUMN, required)
        state = check.state if check else "pending"
        details = ""
        if check and check.voxels:
            details = _("{volume} ml, {components} connected component(s)").format(
                volume=f"{check.volume_ml:.1f}", components=check.components
            )
        color = STATE_COLORS.get(state, STATE_COLORS["pending"])
        table.setItem(row, STATE_COLUMN, _item(stateWords().get(state, state), details, color))
        results = sorted(check.results, key=_ruleOrder) if check else []
        rulesText = "; ".join(ruleText(r, structure, self.protocol) for r in results)
        table.setItem(row, RULES_COLUMN, _item(rulesText, "\n".join(f"{_mark(r)} {r.message}" for r in results)))
