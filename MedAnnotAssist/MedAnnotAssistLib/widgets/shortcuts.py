"""The annotation workflow's keyboard: next / previous structure, accept, reject, submit, next case, bound to the
workstation's ``shortcuts()`` (the same calls the browser binds), and the help popup that lists them with
whether each does something now (and if not, why)."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

import qt
import slicer
from slicer.i18n import tr as _

from ..workflow.workstation import SHORTCUT_KEYS as KEYS

if TYPE_CHECKING:
    from ..workflow.workstation import Workstation


class Shortcuts:
    """Keys active while the module panel is shown (in its window: the views, the embedded Segment Editor)."""

    def __init__(self, window, workstation: Workstation):
        self.workstation = workstation
        self.keys = {}
        for name, sequence in KEYS.items():
            shortcut = qt.QShortcut(qt.QKeySequence(sequence), window)
            shortcut.setContext(qt.Qt.WindowShortcut)
            shortcut.activated.connect(lambda name=name: self.press(name))
            self.keys[name] = shortcut
        self.help = None

    def setEnabled(self, enabled: bool) -> None:
        for shortcut in self.keys.values():
            shortcut.setEnabled(enabled)

    def press(self, name: str) -> None:
        """Do what the key stands for, or say in the status bar why it does nothing now."""
        action = self.workstation.shortcuts()[name].action()
        if not action.enabled:
            slicer.util.showStatusMessage(f"{KEYS[name]}: {action.reason}", 5000)
            return
        calls = {
            "next_structure": self.workstation.protocol.next_structure,
            "previous_structure": self.workstation.protocol.previous_structure,
            "accept": self.workstation.protocol.accept,
            "reject": self.workstation.protocol.reject,
            "submit": self.workstation.task.submit,
            "next_case": self.workstation.task.next_task,
        }
        calls[name]()

    def helpText(self) -> str:
        """The keys, what each does and whether it does something now, as an HTML table."""
        rows = []
        for name, shortcut in self.workstation.shortcuts().items():
            action = shortcut.action()
            now = _("now") if action.enabled else _("not now: {reason}").format(reason=action.reason)
            rows.append(
                f"<tr><td><b>{html.escape(KEYS[name])}</b></td><td>{html.escape(shortcut.description)}</td>"
                f"<td><i>{html.escape(now)}</i></td></tr>"
            )
        return f"<table cellspacing='6'>{''.join(rows)}</table>"

    def showHelp(self) -> None:
        """The help popup (not modal: the keys can be tried while it is open)."""
        if self.help is None:
            self.help = qt.QDialog(slicer.util.mainWindow())
            self.help.setObjectName("shortcutsHelp")
            self.help.setWindowTitle(_("MedAnnotAssist keyboard shortcuts"))
            layout = qt.QVBoxLayout(self.help)
            self.helpLabel = qt.QLabel()
            self.helpLabel.setObjectName("shortcutsHelpLabel")
            self.helpLabel.setTextFormat(qt.Qt.RichText)
            layout.addWidget(self.helpLabel)
            close = qt.QPushButton(_("Close"))
            close.clicked.connect(self.help.hide)
            layout.addWidget(close)
        self.helpLabel.setText(self.helpText())
        self.help.show()

    def cleanup(self) -> None:
        for shortcut in self.keys.values():
            shortcut.setParent(None)
        self.keys = {}
        if self.help is not None:
            self.help.close()
