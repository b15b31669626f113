"""Modal dialogs under the stand-in: recorded and answered from the test's script, never blocking.

Offscreen, a modal dialog would wait forever for a click. Each one the code under test opens (a file dialog,
a question box, ``dialog.exec()``, ``slicer.util.confirmOkCancelDisplay``) takes the next scripted answer
(``standin.dialogs.answer(...)``); one the test did not expect raises ``UnexpectedDialogError`` in the slot,
which fails the test.
"""

from __future__ import annotations


class UnexpectedDialogError(AssertionError):
    """The code under test opened a modal dialog the test gave no answer for."""


class ModalDialogs:
    """What was asked (``opened``, in order) and the answers still waiting to be given."""

    def __init__(self):
        self.opened: list[str] = []
        self._answers: list = []

    def answer(self, *answers) -> None:
        """Queue the answers, in the order the dialogs will open: a path ('' = cancelled), True/False, a button."""
        self._answers.extend(answers)

    def take(self, what: str):
        self.opened.append(what)
        if not self._answers:
            raise UnexpectedDialogError(f"a modal dialog opened that the test did not answer: {what}")
        return self._answers.pop(0)

    @property
    def unanswered(self) -> list:
        return list(self._answers)


_current = ModalDialogs()


def current() -> ModalDialogs:
    return _current


def reset() -> ModalDialogs:
    """A fresh script for the next test."""
    global _current
    _current = ModalDialogs()
    return _current


def answerDialog(what: str):
    return _current.take(what)


def answerFileDialog(kind: str, caption: str, directory: str, filter: str):
    return _current.take(f"QFileDialog.{kind}: {caption} [{filter}] in '{directory}'")
