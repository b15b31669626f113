"""The Review section: the case's readers (each on or off in the views), the consensus and the disagreement
map in the slice views and in 3-D, the agreement per structure (verdict, Dice, HD95) with what the final takes
(the consensus, one reader's, or the reviewer's edit in the Segment Editor), reasons for a final that fails a
blocking rule, Approve, and Return to a reader with a comment. A one-reader case has no consensus: that
reader's segmentation is the proposal, shown in its place, with no disagreement map and "one reader" as the
verdict. Binds ``workflow.review.ReviewModel``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import qt
import slicer
from slicer.i18n import tr as _

from .binding import (
    ERROR_COLOR,
    GOOD_COLOR,
    WARNING_COLOR,
    Binding,
    blocked,
    colored,
    fitRows,
    minutes,
    setCell,
    setSwatch,
    showMessage,
    text,
)

if TYPE_CHECKING:
    from ..workflow.review import ReviewModel
    from ..workflow.review_state import AgreementRow, ReviewState

COLOR_COLUMN, NAME_COLUMN, VERDICT_COLUMN, DICE_COLUMN, HD95_COLUMN, DECISION_COLUMN = range(6)
CONSENSUS, EDITED, READER = "consensus", "edited", "reader:"
ONE_READER = "one reader"  # the verdict of a one-reader case's rows (workflow.review_state.ONE_READER)


def number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


class ReviewPanel(Binding):
    model: ReviewModel

    def __init__(self, ui, model: ReviewModel):
        super().__init__(model, ui)
        ui.readersHolder.layout().addStretch(1)
        self.readerBoxes: dict[str, object] = {}  # reader label -> its check box
        self.decisionBoxes: dict[str, object] = {}  # structure id -> its "final from" combo box
        self._readers: tuple[str, ...] = ()
        self._structures: tuple[str, ...] = ()
        self._comboReaders: tuple = ()  # the readers (and the one reader) the decision boxes were made for
        self.selected: str | None = None  # the structure row the reviewer clicked (for "keep with reason")
        ui.agreementTable.cellClicked.connect(self.onCellClicked)
        ui.consensusCheckBox.clicked.connect(self.onShowConsensus)
        ui.disagreementSlicesCheckBox.clicked.connect(self.onShowDisagreement)
        ui.disagreement3DCheckBox.clicked.connect(self.onShowDisagreement)
        ui.reviewKeepButton.clicked.connect(self.onKeep)
        ui.reviewReasonLineEdit.returnPressed.connect(self.onKeep)
        ui.approveButton.clicked.connect(self.onApprove)
        ui.returnButton.clicked.connect(self.onReturn)
        self.render(model.state)

    # ---- what the reviewer does ---------------------------------------------------------------------------

    def onCellClicked(self, row: int, column: int) -> None:
        if 0 <= row < len(self._structures):
            self.selected = self._structures[row]
            self.render(self.model.state)

    def onShowReader(self, label: str) -> None:
        self.model.show_reader(label, self.readerBoxes[label].isChecked())

    def onShowConsensus(self) -> None:
        self.model.show_consensus(self.ui.consensusCheckBox.isChecked())

    def onShowDisagreement(self) -> None:
        ui = self.ui
        self.model.show_disagreement(ui.disagreementSlicesCheckBox.isChecked(), ui.disagreement3DCheckBox.isChecked())

    def onDecision(self, structureId: str, index: int) -> None:
        choice = str(self.decisionBoxes[structureId].itemData(index))
        if choice == CONSENSUS:
            self.model.take_consensus(structureId)
        elif choice == EDITED:
            self.model.edit(structureId)  # the Segment Editor opens the edited copy on this structure
        else:
            self.model.take_reader(structureId, choice.removeprefix(READER))

    def onKeep(self) -> None:
        if self.selected is not None and self.model.override(self.selected, None, text(self.ui.reviewReasonLineEdit)):
            self.ui.reviewReasonLineEdit.clear()

    def onApprove(self) -> None:
        self.model.approve()

    def onReturn(self) -> None:
        readers = [reader.label for reader in self.model.state.readers]
        window = slicer.util.mainWindow()
        reader = qt.QInputDialog.getItem(window, _("Return to a reader"), _("Which reader?"), readers, 0, False)
        if not reader:
            return
        comment = qt.QInputDialog.getText(
            window, _("Return to a reader"), _("What should {reader} change?").format(reader=reader)
        )
        if comment:
            self.model.return_to_readers({str(reader): str(comment)})

    # ---- what the model says ---------------------------------------------------------------------------

    def render(self, state: ReviewState) -> None:
        ui = self.ui
        stage = {
            "none": _("No review in hand."),
            "waiting": _("{case}: the readers are still working."),
            "loading": _("{case}: loading the readers and the consensus..."),
            "ready": _("{case}, consensus round {round}: {count} reader(s)"),
            "blinded": _("{case}: hidden until the case is approved."),
            "decided": _("{case}: decided."),
        }.get(state.stage, state.stage)
        if state.stage == "ready" and state.one_reader:
            stage = _("{case}, round {round}: one reader ({reader}); their segmentation is the proposal")
        words = stage.format(case=state.case_name, round=state.round, count=len(state.readers), reader=state.one_reader)
        colored(ui.reviewCaseLabel, words + (f"\n{state.blinded_text}" if state.blinded_text else ""))
        self._renderReaders(state)
        show = state.actions["show_disagreement"]
        proposal = _("The reader's segmentation, the proposal, in the views.") if state.one_reader else None
        for box, checked, action, tip in (
            (ui.consensusCheckBox, state.consensus_visible, state.actions["show_consensus"], proposal),
            (ui.disagreementSlicesCheckBox, state.disagreement_in_slices, show, None),
            (ui.disagreement3DCheckBox, state.disagreement_in_3d, show, None),
        ):
            with blocked(box):
                box.setChecked(checked)
            self.showAction(box, action, tip)
        ui.consensusCheckBox.setText(_("Proposal") if state.one_reader else _("Consensus"))
        self._renderRows(state)
        row = state.row(self.selected) if self.selected in self._structures else None
        can = bool(row and row.failures and not row.override and state.actions["edit"].enabled)
        ui.reviewKeepButton.setEnabled(can)
        ui.reviewReasonLineEdit.setEnabled(can)
        if state.checking:
            colored(ui.finalProblemsLabel, _("Checking the final against the protocol..."))
        elif state.final_problems:
            lines = "".join(f"\n• {problem}" for problem in state.final_problems)
            colored(ui.finalProblemsLabel, _("Before Approve:") + lines, ERROR_COLOR)
        else:
            colored(ui.finalProblemsLabel, "")
        self.showAction(ui.approveButton, state.actions["approve"])
        self.showAction(ui.returnButton, state.actions["return"])
        showMessage(ui.reviewMessageLabel, state.message, state.message_is_error)

    def _renderReaders(self, state: ReviewState) -> None:
        labels = tuple(reader.label for reader in state.readers)
        holder = self.ui.readersHolder
        if labels != self._readers:
            self._readers = labels
            for box in self.readerBoxes.values():
                box.setParent(None)
                box.deleteLater()
            self.readerBoxes = {}
            for label in labels:
                box = qt.QCheckBox(label)
                box.setObjectName(f"reader_{label}")
                box.clicked.connect(lambda checked=False, label=label: self.onShowReader(label))
                holder.layout().insertWidget(len(self.readerBoxes), box)  # before the stretch
                self.readerBoxes[label] = box
        for reader in state.readers:
            box = self.readerBoxes[reader.label]
            with blocked(box):
                box.setChecked(reader.visible)
            box.setText(f"{reader.label} ({minutes(reader.time_spent_s)})")
            kept = "\n".join(reader.overrides) or _("no override")
            box.setToolTip(_("Show this reader's segmentation in the views.") + "\n" + kept)

    def _renderRows(self, state: ReviewState) -> None:
        table = self.ui.agreementTable
        ids = tuple(row.structure_id for row in state.rows)
        if ids != self._structures or (self._readers, state.one_reader) != self._comboReaders:
            self._structures, self._comboReaders = ids, (self._readers, state.one_reader)
            table.setRowCount(len(ids))
            self.decisionBoxes = {}
            for index, row in enumerate(state.rows):
                combo = qt.QComboBox()
                combo.setObjectName(f"decision_{row.structure_id}")
                combo.addItem(_("Proposal") if state.one_reader else _("Consensus"), CONSENSUS)
                for reader in state.readers:
                    combo.addItem(reader.label, READER + reader.label)
                combo.addItem(_("Your edit"), EDITED)
                combo.activated.connect(lambda index, sid=row.structure_id: self.onDecision(sid, index))
                table.setCellWidget(index, DECISION_COLUMN, combo)
                self.decisionBoxes[row.structure_id] = combo
        for index, row in enumerate(state.rows):
            self._renderRow(table, index, row, state)
        with blocked(table):
            table.clearSelection()
            if self.selected in ids:
                table.selectRow(ids.index(self.selected))
        for column in (COLOR_COLUMN, NAME_COLUMN, VERDICT_COLUMN, DICE_COLUMN, HD95_COLUMN):
            table.resizeColumnToContents(column)
        fitRows(table, len(state.rows))

    def _renderRow(self, table, index: int, row: AgreementRow, state: ReviewState) -> None:
        setSwatch(table, index, COLOR_COLUMN, row.color)
        problems = "\n".join(row.failures)
        kept = _("kept: {reason}").format(reason=row.override) if row.override else ""
        color = ERROR_COLOR if row.failures and not row.override else None
        setCell(table, index, NAME_COLUMN, row.name, "\n".join(w for w in (problems, kept) if w), color)
        verdictColor = {"agreed": GOOD_COLOR, ONE_READER: None}.get(row.verdict, WARNING_COLOR)
        setCell(table, index, VERDICT_COLUMN, row.verdict, row.reason, verdictColor)
        setCell(table, index, DICE_COLUMN, number(row.dice, 2), _("The readers' mean pairwise Dice"))
        setCell(table, index, HD95_COLUMN, number(row.hd95_mm, 1), _("The readers' mean pairwise HD95 (mm)"))
        combo = self.decisionBoxes[row.structure_id]
        choice = {CONSENSUS: CONSENSUS, EDITED: EDITED}.get(row.decision, READER + (row.reader or ""))
        with blocked(combo):
            combo.setCurrentIndex(max(0, combo.findData(choice)))
        self.showAction(combo, state.actions["edit"], row.decision_text)
