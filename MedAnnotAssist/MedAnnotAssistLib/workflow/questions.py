"""The questions panel's model: the protocol's case-level questions (e.g. Lung-RADS) with their options and
the reader's answers; the required ones gate Submit (through the protocol model's gate, which reads the
session's unanswered questions)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..mrml.task_session import TaskSession, TaskSessionError
from .events import Action, Model, off, on


@dataclass(frozen=True)
class QuestionRow:
    question_id: str
    text: str
    type: str  # "choice"
    options: tuple[str, ...]
    required: bool
    answer: str | None


@dataclass(frozen=True)
class QuestionsState:
    rows: tuple[QuestionRow, ...]
    unanswered: tuple[str, ...]  # required questions without an answer
    gate: Action
    message: str
    message_is_error: bool


class QuestionsModel(Model):
    def __init__(self):
        super().__init__()
        self.session: TaskSession | None = None
        self._unsubscribe: Callable[[], None] | None = None

    def bind(self, session: TaskSession | None) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self.session = session
        if session is not None:
            self._unsubscribe = session.subscribe(self._on_session)
        self.tell("")
        self.refresh()

    def _on_session(self, event: str, key) -> None:
        if event == "closed":
            self.bind(None)
        elif event == "answer":
            self.refresh()

    def _build(self) -> QuestionsState:
        if self.session is None:
            return QuestionsState((), (), off("no case is open"), self.message, self.message_is_error)
        answers = self.session.answers
        rows = tuple(
            QuestionRow(q.id, q.text, q.type, tuple(q.options), q.required, answers.get(q.id))
            for q in self.session.protocol.questions
        )
        unanswered = tuple(self.session.unanswered())
        texts = {q.id: q.text for q in self.session.protocol.questions}
        gate = off("; ".join(f"answer: {texts[q]}" for q in unanswered)) if unanswered else on()
        return QuestionsState(rows, unanswered, gate, self.message, self.message_is_error)

    def answer(self, question_id: str, value: str | None) -> bool:
        """Answer a question (None clears the answer)."""
        if self.session is None:
            self.tell("answer: no case is open", error=True)
            self.refresh()
            return False
        try:
            self.session.answer(question_id, value)
        except TaskSessionError as error:
            self.tell(str(error), error=True)
            self.refresh()
            return False
        self.tell("")
        self.refresh()
        return True

    def poll(self) -> bool:
        return self.refresh()
