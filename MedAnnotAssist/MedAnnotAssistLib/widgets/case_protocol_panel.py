"""The Protocol section of a claimed case: one row per structure (colour, name, required, state, AI badge, rule
results with override reasons), the selected row's actions, "keep with a reason" for a structure a rule
blocks, the case in 3-D with the protocol's preset, and what stands between the case and Submit. Binds
``workflow.protocol.ProtocolModel``; the Segment Editor follows its selection (``segment_editor_panel``)."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

from slicer.i18n import tr as _

from ..workflow.events import Action
from .binding import (
    ERROR_COLOR,
    GOOD_COLOR,
    WARNING_COLOR,
    Binding,
    blocked,
    colored,
    fitRows,
    setCell,
    setSwatch,
    showMessage,
    text,
)

if TYPE_CHECKING:
    from ..workflow.protocol import ProtocolModel, ProtocolState, RuleRow, StructureRow

COLOR_COLUMN, NAME_COLUMN, REQUIRED_COLUMN, STATE_COLUMN, RULES_COLUMN, AI_COLUMN = range(6)
ROW_BUTTONS = {"accept": "acceptButton", "reject": "rejectButton", "revert": "revertButton", "done": "doneButton"}
ROW_BUTTONS |= {"absent": "absentButton", "override": "keepButton"}
STATE_COLORS = {
    "empty": "#808080",
    "suggested": "#7b4fd0",
    "accepted": GOOD_COLOR,
    "rejected": "#a0522d",
    "refined": GOOD_COLOR,
    "done": GOOD_COLOR,
    "absent": "#2f6bd8",
}


def stateWords() -> dict[str, str]:
    return {
        "empty": _("Empty"),
        "suggested": _("AI suggestion"),
        "accepted": _("Accepted"),
        "rejected": _("Rejected"),
        "refined": _("Refined"),
        "done": _("Done"),
        "absent": _("Absent"),
    }


def ruleMark(rule: RuleRow) -> str:
    if rule.passed is None:
        return "?"
    return "✓" if rule.passed else ("✗" if rule.blocks else "⚠")


def ruleWords(rule: RuleRow) -> str:
    """``✗ volume 42.9 ml (expected 500-5000 ml), kept: only the lung bases`` in a few words."""
    words = f"{ruleMark(rule)} {rule.text}"
    if rule.passed is False and rule.expected and rule.expected not in rule.text:
        words += f" ({rule.expected})"
    if rule.override:
        words += ", " + _("kept: {reason}").format(reason=rule.override)
    return words


def rulesSummary(row: StructureRow) -> tuple[str, str | None]:
    """A few characters for the table: a rule blocks, every block was kept with a reason, a warning, all pass."""
    if row.blocking:
        return "✗ " + _("blocks"), ERROR_COLOR
    if any(r.override for r in row.rules):
        return "✓ " + _("kept"), WARNING_COLOR
    if any(r.passed is False for r in row.rules):
        return "⚠", WARNING_COLOR
    return ("✓", GOOD_COLOR) if row.rules else ("", None)


def _order(rule: RuleRow) -> int:
    """Failing rules first: blocking, then warnings, then the ones not evaluated, then the passed ones."""
    if rule.passed is False:
        return 0 if rule.blocks else 1
    return 2 if rule.passed is None else 3


class CaseProtocolPanel(Binding):
    model: ProtocolModel

    def __init__(self, ui, model: ProtocolModel):
        super().__init__(model, ui)
        self._ids: tuple[str, ...] = ()
        table = ui.caseStructuresTable
        table.cellClicked.connect(self.onCellClicked)
        ui.acceptButton.clicked.connect(self.onAccept)
        ui.rejectButton.clicked.connect(self.onReject)
        ui.revertButton.clicked.connect(self.onRevert)
        ui.doneButton.clicked.connect(self.onDone)
        ui.absentButton.clicked.connect(self.onAbsent)
        ui.keepButton.clicked.connect(self.onKeep)
        ui.overrideReasonLineEdit.returnPressed.connect(self.onKeep)
        ui.checkNowButton.clicked.connect(self.onCheckNow)
        ui.volumeRenderingCheckBox.clicked.connect(self.onVolumeRendering)
        self.render(model.state)

    # ---- what the user does ----------------------------------------------------------------------------

    def onCellClicked(self, row: int, column: int) -> None:
        if 0 <= row < len(self._ids):
            self.model.select(self._ids[row])

    def onAccept(self) -> None:
        self.model.accept()

    def onReject(self) -> None:
        self.model.reject()

    def onRevert(self) -> None:
        self.model.revert()

    def onDone(self) -> None:
        self.model.mark_done()

    def onAbsent(self) -> None:
        self.model.declare_absent()

    def onKeep(self) -> None:
        selected = self.model.state.selected
        if selected is not None and self.model.override(selected, None, text(self.ui.overrideReasonLineEdit)):
            self.ui.overrideReasonLineEdit.clear()

    def onCheckNow(self) -> None:
        self.model.check_now()

    def onVolumeRendering(self) -> None:
        self.model.show_volume_rendering(self.ui.volumeRenderingCheckBox.isChecked())

    # ---- what the model says ---------------------------------------------------------------------------

    def render(self, state: ProtocolState) -> None:
        ui = self.ui
        if state.protocol is None:
            ui.caseProtocolTitleLabel.setText(_("No case is open."))
        else:
            ui.caseProtocolTitleLabel.setText(f"<b>{html.escape(state.title)}</b> ({html.escape(state.protocol)})")
        self._renderRows(state)
        selected = state.row(state.selected) if state.selected else None
        self._renderSelected(selected if state.protocol else None)
        for action, name in ROW_BUTTONS.items():
            button = getattr(ui, name)
            if selected is None:
                self.showAction(button, Action(False, _("select a structure")))
            else:
                self.showAction(button, selected.actions[action])
        ui.overrideReasonLineEdit.setEnabled(bool(selected and selected.actions["override"].enabled))
        self.showAction(ui.checkNowButton, state.actions["volume_rendering"])  # both need an open case
        rendering = state.actions["volume_rendering"]
        self.showAction(ui.volumeRenderingCheckBox, rendering)
        with blocked(ui.volumeRenderingCheckBox):
            ui.volumeRenderingCheckBox.setChecked(state.in_3d)
        preset = _("Show in 3-D ({preset})").format(preset=state.preset) if state.preset else _("Show in 3-D")
        ui.volumeRenderingCheckBox.setText(preset)
        self._renderGate(state)
        showMessage(ui.caseProtocolMessageLabel, state.message, state.message_is_error)

    def _renderRows(self, state: ProtocolState) -> None:
        table = self.ui.caseStructuresTable
        self._ids = tuple(row.structure_id for row in state.rows)
        if table.property("rowCount") != len(state.rows):
            table.setRowCount(len(state.rows))
        words = stateWords()
        for index, row in enumerate(state.rows):
            self._renderRow(table, index, row, words)
        with blocked(table):
            table.clearSelection()
            if state.selected in self._ids:
                table.selectRow(self._ids.index(state.selected))
        for column in (COLOR_COLUMN, NAME_COLUMN, REQUIRED_COLUMN, STATE_COLUMN, RULES_COLUMN, AI_COLUMN):
            table.resizeColumnToContents(column)
        fitRows(table, len(state.rows))

    def _renderRow(self, table, index: int, row: StructureRow, words: dict[str, str]) -> None:
        setSwatch(table, index, COLOR_COLUMN, row.color)
        setCell(table, index, NAME_COLUMN, row.name, row.instructions, data=row.structure_id)
        required = _("Required") if row.required else _("Optional: may be declared absent")
        setCell(table, index, REQUIRED_COLUMN, "*" if row.required else "", required)
        details = _("{volume} ml, {active} s of your time").format(volume=f"{row.volume_ml:.1f}", active=row.active_s)
        setCell(table, index, STATE_COLUMN, words.get(row.state, row.state), details, STATE_COLORS.get(row.state))
        badge = (row.ai or "").removeprefix("AI: ")  # the column says AI
        setCell(table, index, AI_COLUMN, badge, row.ai or _("No AI proposal"))
        summary, color = rulesSummary(row)
        setCell(
            table, index, RULES_COLUMN, summary, "\n".join(ruleWords(r) for r in sorted(row.rules, key=_order)), color
        )

    def _renderSelected(self, selected: StructureRow | None) -> None:
        """The selected structure's instructions and every rule result, with the reasons given."""
        if selected is None:
            self.ui.selectedStructureLabel.setText(_("Select a structure to see its instructions and rules."))
            return
        lines = [f"<b>{html.escape(selected.name)}</b>: {html.escape(selected.instructions)}".rstrip(": ")]
        for rule in sorted(selected.rules, key=_order):
            color = ERROR_COLOR if rule.blocks and not rule.override else None
            line = html.escape(ruleWords(rule))
            lines.append(f"<span style='color: {color}'>{line}</span>" if color else line)
        self.ui.selectedStructureLabel.setText("<br>".join(lines))

    def _renderGate(self, state: ProtocolState) -> None:
        label = self.ui.gateLabel
        checking = ("\n" + _("(checking the rules after your edit...)")) if state.checking else ""
        if state.protocol is None:
            colored(label, "")
        elif state.gate.enabled:
            colored(label, _("The protocol is met: ready to submit.") + checking, GOOD_COLOR)
        else:
            lines = "".join(f"\n• {problem}" for problem in state.problems)
            colored(label, _("Before Submit:") + lines + checking, ERROR_COLOR)
