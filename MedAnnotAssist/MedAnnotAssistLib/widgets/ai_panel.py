"""The AI pre-segmentation section: the registry's engines, the protocol structures the chosen one proposes,
Run with progress and Cancel (the engine runs in a ``core.jobs`` worker, never on Slicer's GUI thread), and a
question before a run replaces the reader's own work. Binds ``workflow.ai.AIModel``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import qt
import slicer
from slicer.i18n import tr as _

from .binding import Binding, blocked, showMessage, showProgress

if TYPE_CHECKING:
    from ..workflow.ai import AIModel, AIState


class AIPanel(Binding):
    model: AIModel

    def __init__(self, ui, model: AIModel):
        super().__init__(model, ui)
        self._engines: tuple = ()
        self._targets: tuple[str, ...] = ()
        ui.engineComboBox.activated.connect(self.onEngineChosen)
        ui.refreshEnginesButton.clicked.connect(self.onRefresh)
        ui.aiStructuresList.itemChanged.connect(self.onStructuresChanged)
        ui.runButton.clicked.connect(self.onRun)
        ui.cancelRunButton.clicked.connect(self.onCancel)
        self.render(model.state)

    def onEngineChosen(self, index: int) -> None:
        name = self.ui.engineComboBox.itemData(index)
        if name:
            self.model.choose_engine(str(name))

    def onRefresh(self) -> None:
        self.model.refresh_engines()

    def onStructuresChanged(self, item) -> None:
        listWidget = self.ui.aiStructuresList
        chosen = [
            str(listWidget.item(i).data(qt.Qt.UserRole))
            for i in range(len(self._targets))
            if listWidget.item(i).checkState() == qt.Qt.Checked
        ]
        self.model.choose_structures(chosen)

    def onRun(self) -> None:
        if self.model.run() or not self.model.state.confirm:
            return
        if slicer.util.confirmOkCancelDisplay(self.model.state.confirm, windowTitle=_("Replace your work?")):
            self.model.run(confirmed=True)

    def onCancel(self) -> None:
        self.model.cancel()

    def render(self, state: AIState) -> None:
        ui = self.ui
        combo = ui.engineComboBox
        with blocked(combo):
            if state.engines != self._engines:
                self._engines = state.engines
                combo.clear()
                for engine in state.engines:
                    combo.addItem(f"{engine.name} ({engine.detail})" if engine.detail else engine.name, engine.name)
                    combo.setItemData(combo.findData(engine.name), engine.detail, qt.Qt.ToolTipRole)
            combo.setCurrentIndex(combo.findData(state.engine) if state.engine else -1)
        combo.setEnabled(bool(state.engines))
        self.showAction(ui.refreshEnginesButton, state.actions["refresh"])

        listWidget = ui.aiStructuresList
        with blocked(listWidget):
            ids = tuple(t.structure_id for t in state.targets)
            if ids != self._targets:
                self._targets = ids
                listWidget.clear()
                for target in state.targets:
                    item = qt.QListWidgetItem(target.name)
                    item.setData(qt.Qt.UserRole, target.structure_id)
                    item.setFlags(qt.Qt.ItemIsEnabled | qt.Qt.ItemIsUserCheckable)
                    listWidget.addItem(item)
            for index, target in enumerate(state.targets):
                item = listWidget.item(index)
                item.setCheckState(qt.Qt.Checked if target.chosen else qt.Qt.Unchecked)
                item.setText(target.name + (" - " + _("your work") if target.reader_work else ""))
                item.setToolTip(_("The engine's {parts}").format(parts=", ".join(target.engine_structures)))
        for name, button in (("run", ui.runButton), ("cancel", ui.cancelRunButton)):
            self.showAction(button, state.actions[name])
        showProgress(ui.aiProgressBar, state.progress)
        ui.lastRunLabel.setText(state.last_run)
        said = "" if state.message == state.last_run else state.message  # the last run's words once
        showMessage(ui.aiMessageLabel, said, state.message_is_error)
