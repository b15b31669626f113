"""The Questions section: the protocol's case-level questions (e.g. Lung-RADS) as a form, one choice per
question; the required ones gate Submit. Binds ``workflow.questions.QuestionsModel``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import qt
from slicer.i18n import tr as _

from .binding import ERROR_COLOR, GOOD_COLOR, Binding, blocked, colored, showMessage

if TYPE_CHECKING:
    from ..workflow.questions import QuestionsModel, QuestionsState


class QuestionsPanel(Binding):
    model: QuestionsModel

    def __init__(self, ui, model: QuestionsModel):
        super().__init__(model, ui)
        self.form = None
        self.choices: dict[str, object] = {}  # question id -> its combo box (the tests choose in them)
        self._questions: tuple = ()
        self.render(model.state)

    def onAnswer(self, questionId: str, index: int) -> None:
        combo = self.choices[questionId]
        value = combo.itemData(index)
        self.model.answer(questionId, str(value) if value else None)

    def _build(self, state: QuestionsState) -> None:
        """A form for this protocol's questions (made again only when the questions change)."""
        if self.form is not None:
            self.form.setParent(None)
            self.form.deleteLater()
        self.form, self.choices = qt.QWidget(), {}
        layout = qt.QFormLayout(self.form)
        layout.setContentsMargins(0, 0, 0, 0)
        for row in state.rows:
            combo = qt.QComboBox()
            combo.setObjectName(f"question_{row.question_id}")
            combo.addItem(_("(not answered)"), "")
            for option in row.options:
                combo.addItem(option, option)
            combo.activated.connect(lambda index, questionId=row.question_id: self.onAnswer(questionId, index))
            label = qt.QLabel(row.text + (" *" if row.required else ""))
            label.setToolTip(_("Required before Submit") if row.required else _("Optional"))
            layout.addRow(label, combo)
            self.choices[row.question_id] = combo
        self.ui.questionsHolder.layout().addWidget(self.form)

    def render(self, state: QuestionsState) -> None:
        shape = tuple((row.question_id, row.text, row.options, row.required) for row in state.rows)
        if shape != self._questions:
            self._questions = shape
            self._build(state)
        for row in state.rows:
            combo = self.choices[row.question_id]
            with blocked(combo):
                combo.setCurrentIndex(max(0, combo.findData(row.answer or "")))
        if not state.rows:
            colored(self.ui.questionsGateLabel, _("No case is open.") if not state.gate.enabled else "")
        elif state.gate.enabled:
            colored(self.ui.questionsGateLabel, _("Every required question is answered."), GOOD_COLOR)
        else:
            colored(self.ui.questionsGateLabel, state.gate.reason, ERROR_COLOR)
        showMessage(self.ui.questionsMessageLabel, state.message, state.message_is_error)
