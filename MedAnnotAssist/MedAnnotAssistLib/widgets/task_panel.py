"""The Task section: the queue server and the token, the project, the case in hand with its lease and active
time, Submit / Release / Skip, the outbox and the offline indicator. Binds ``workflow.task.TaskModel``."""

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
    minutes,
    showMessage,
    showProgress,
    text,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..workflow.events import Event
    from ..workflow.task import TaskModel
    from ..workflow.task_state import TaskState
    from .settings_store import SettingsStore

CONNECTED = "connected"


class TaskPanel(Binding):
    model: TaskModel

    def __init__(self, ui, model: TaskModel, store: SettingsStore, showShortcuts: Callable[[], None]):
        super().__init__(model, ui)
        self.store = store
        self._connection = model.state.connection
        self._projects: tuple = ()
        self._refused: tuple = ()
        ui.serverUrlLineEdit.setText(model.settings.server_url)
        token = store.token()
        ui.tokenLineEdit.setEchoMode(qt.QLineEdit.Password)
        ui.tokenLineEdit.setText(token)
        ui.rememberTokenCheckBox.setChecked(bool(token))

        ui.connectButton.clicked.connect(self.onConnect)
        ui.tokenLineEdit.returnPressed.connect(self.onConnect)
        ui.disconnectButton.clicked.connect(self.onDisconnect)
        ui.rememberTokenCheckBox.clicked.connect(self.onRememberToken)
        ui.shortcutsButton.clicked.connect(showShortcuts)
        ui.projectComboBox.activated.connect(self.onProjectChosen)
        ui.nextTaskButton.clicked.connect(self.onNextTask)
        ui.pauseButton.clicked.connect(self.onPause)
        ui.submitButton.clicked.connect(self.onSubmit)
        ui.releaseButton.clicked.connect(self.onRelease)
        ui.skipButton.clicked.connect(self.onSkip)
        ui.claimAgainButton.clicked.connect(self.onClaimAgain)
        ui.syncButton.clicked.connect(self.onSync)
        ui.discardButton.clicked.connect(self.onDiscard)
        self.render(model.state)

    # ---- what the user does ----------------------------------------------------------------------------

    def onConnect(self) -> None:
        self.model.connect(text(self.ui.tokenLineEdit).strip(), server_url=text(self.ui.serverUrlLineEdit))

    def onDisconnect(self) -> None:
        self.model.disconnect()

    def onRememberToken(self) -> None:
        remember = self.ui.rememberTokenCheckBox.isChecked()
        self.store.rememberToken(text(self.ui.tokenLineEdit).strip() if remember and self._signedIn() else None)

    def _signedIn(self) -> bool:
        return self.model.state.connection == CONNECTED

    def onProjectChosen(self, index: int) -> None:
        projectId = self.ui.projectComboBox.itemData(index)
        if projectId is not None:
            self.model.select_project(int(projectId))

    def onNextTask(self) -> None:
        self.model.next_task()

    def onPause(self) -> None:
        if self.ui.pauseButton.isChecked():
            self.model.pause()
        else:
            self.model.resume()

    def onSubmit(self) -> None:
        self.model.submit()

    def onRelease(self) -> None:
        question = _("Give this case back to the queue? Your work on it is dropped.")
        if slicer.util.confirmOkCancelDisplay(question, windowTitle=_("Release the case")):
            self.model.release()

    def onSkip(self) -> None:
        reason = qt.QInputDialog.getText(
            slicer.util.mainWindow(), _("Skip the case"), _("Why do you skip it? (kept with the case)")
        )
        if reason:  # '' when cancelled
            self.model.skip(str(reason))

    def onClaimAgain(self) -> None:
        self.model.claim_again(self._chosenRefused())

    def onSync(self) -> None:
        self.model.sync()

    def onDiscard(self) -> None:
        entry = self._chosenRefused()
        if entry is not None and slicer.util.confirmOkCancelDisplay(
            _("Delete this refused submission from the outbox? It cannot be sent afterwards."),
            windowTitle=_("Discard a submission"),
        ):
            self.model.discard(entry)

    def _chosenRefused(self) -> int | None:
        items = self.ui.refusedListWidget.selectedItems()
        return int(items[0].data(qt.Qt.UserRole)) if items else None

    # ---- what the model says ---------------------------------------------------------------------------

    def onEvent(self, event: Event) -> None:
        super().onEvent(event)
        if event.name == "changed":
            self._follow(event["state"])

    def _follow(self, state: TaskState) -> None:
        """Settings (never the token) go to Slicer's settings; a remembered token once it was accepted."""
        self.store.save(self.model.settings)
        if state.connection != self._connection:
            self._connection = state.connection
            if state.connection == CONNECTED and self.ui.rememberTokenCheckBox.isChecked():
                self.store.rememberToken(text(self.ui.tokenLineEdit).strip())

    def onModelEvent(self, event: Event) -> None:
        if event.name == "lease_lost":  # the panel says it in red; the status bar reaches a reader in another module
            slicer.util.showStatusMessage(
                _("MedAnnotAssist: the lease of your case was lost; your work is kept"), 10000
            )

    def render(self, state: TaskState) -> None:
        ui = self.ui
        words = {
            "connected": _("Signed in as {user}").format(user=state.user),
            "connecting": _("Connecting to {server}...").format(server=state.server_url),
        }.get(state.connection, _("Not connected."))
        if state.connection == CONNECTED and state.protocol:
            words += " - " + _("protocol {protocol}").format(protocol=state.protocol)
        colored(ui.connectionStatusLabel, words, GOOD_COLOR if state.connection == CONNECTED else None)
        ui.offlineLabel.setVisible(state.offline)
        colored(ui.offlineLabel, state.offline_text, ERROR_COLOR)
        for name in ("connect", "disconnect"):
            self.showAction(getattr(ui, f"{name}Button"), state.actions[name])
        ui.serverUrlLineEdit.setEnabled(state.actions["connect"].enabled)
        ui.tokenLineEdit.setEnabled(state.actions["connect"].enabled)
        self._renderProjects(state)

        self.showAction(ui.nextTaskButton, state.actions["next_task"])
        self._renderCase(state)
        showProgress(ui.loadingProgressBar, state.loading)
        for name in ("submit", "release", "skip", "claim_again", "sync"):
            button = getattr(ui, "claimAgainButton" if name == "claim_again" else f"{name}Button")
            self.showAction(button, state.actions[name])
        self._renderOutbox(state)
        showMessage(ui.taskMessageLabel, state.message, state.message_is_error)

    def _renderProjects(self, state: TaskState) -> None:
        combo = self.ui.projectComboBox
        with blocked(combo):
            if state.projects != self._projects:
                self._projects = state.projects
                combo.clear()
                for project in state.projects:
                    roles = ", ".join(project.roles)
                    combo.addItem(f"{project.name} ({roles})" if roles else project.name, project.id)
            combo.setCurrentIndex(combo.findData(state.project_id) if state.project_id is not None else -1)
        self.showAction(combo, state.actions["select_project"])

    def _renderCase(self, state: TaskState) -> None:
        ui, task, lease, times = self.ui, state.task, state.lease, state.times
        if task is None:
            ui.caseNameLabel.setText(_("No case in hand."))
        else:
            words = _("{case} ({kind}, round {round})").format(case=task.case_name, kind=task.kind, round=task.round)
            if task.comment:
                words += "\n" + _("Returned by the reviewer: {comment}").format(comment=task.comment)
            ui.caseNameLabel.setText(words)
        leaseColor = {"lost": ERROR_COLOR, "offline": WARNING_COLOR}.get(lease.state)
        colored(ui.leaseStatusLabel, lease.text, leaseColor)
        if task is None or task.kind != "annotate":
            ui.timeStatusLabel.setText("")
        else:
            words = _("{active} active, {idle} idle").format(active=minutes(times.case_s), idle=minutes(times.idle_s))
            ui.timeStatusLabel.setText(words + (" - " + _("paused") if times.paused else ""))
        pause, resume = state.actions["pause"], state.actions["resume"]
        with blocked(ui.pauseButton):
            ui.pauseButton.setChecked(times.paused)
        self.showAction(ui.pauseButton, resume if times.paused else pause)

    def _renderOutbox(self, state: TaskState) -> None:
        ui, outbox = self.ui, state.outbox
        colored(ui.outboxStatusLabel, outbox.text or _("Empty."), WARNING_COLOR if outbox.failed else None)
        if outbox.failed != self._refused:
            self._refused = outbox.failed
            chosen = self._chosenRefused()
            ui.refusedListWidget.clear()
            for entry in outbox.failed:
                words = _("case {case}: {message}").format(case=entry.case_id, message=entry.message or entry.code)
                item = qt.QListWidgetItem(words)
                item.setData(qt.Qt.UserRole, entry.id)
                item.setToolTip("\n".join(entry.failures))
                ui.refusedListWidget.addItem(item)
                item.setSelected(entry.id == chosen or (chosen is None and entry is outbox.failed[0]))
        ui.refusedListWidget.setVisible(bool(outbox.failed))
        ui.discardButton.setVisible(bool(outbox.failed))
        ui.discardButton.setEnabled(bool(outbox.failed))
