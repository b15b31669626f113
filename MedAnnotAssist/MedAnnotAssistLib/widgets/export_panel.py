"""The Export section: the current case's segmentation (the reader's, or the reviewed final) as DICOM SEG or
RTSTRUCT tied to the case's DICOM series, optionally stored on a DICOMweb server. The export runs in a
``core.jobs`` worker. Binds ``workflow.export.ExportModel``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import qt
import slicer
from slicer.i18n import tr as _

from .binding import Binding, blocked, showMessage, showProgress, text

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..workflow.export import ExportModel, ExportState
    from ..workflow.settings import WorkstationSettings


def formatWords() -> dict[str, str]:
    return {"seg": _("DICOM SEG"), "rtstruct": _("DICOM RTSTRUCT")}


class ExportPanel(Binding):
    model: ExportModel

    def __init__(self, ui, model: ExportModel, settings: WorkstationSettings, ensureRequirements: Callable[[], None]):
        super().__init__(model, ui)
        self.settings = settings
        self.ensureRequirements = ensureRequirements
        for key, words in formatWords().items():
            ui.exportFormatComboBox.addItem(words, key)
        ui.dicomwebUrlLineEdit.setText(settings.dicomweb_url or "")
        ui.exportFormatComboBox.activated.connect(self.onFormatChosen)
        ui.chooseSeriesButton.clicked.connect(self.onChooseSeries)
        ui.dicomwebUrlLineEdit.editingFinished.connect(self.onDestination)
        ui.sendCheckBox.clicked.connect(self.onDestination)
        ui.exportButton.clicked.connect(self.onExport)
        ui.cancelExportButton.clicked.connect(self.onCancel)
        self.render(model.state)

    def onFormatChosen(self, index: int) -> None:
        chosen = str(self.ui.exportFormatComboBox.itemData(index))
        if self.model.choose_format(chosen):
            self.settings.export_format = chosen  # the task panel stores the settings

    def onChooseSeries(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), _("The case's DICOM series"), "")
        if folder:
            self.model.set_dicom_source(folder)

    def onDestination(self) -> None:
        from ..core.dicom.web import DicomWebSource

        url = text(self.ui.dicomwebUrlLineEdit).strip()
        self.settings.dicomweb_url = url or None
        send = self.ui.sendCheckBox.isChecked()
        self.model.set_destination(DicomWebSource(url) if url else None, send)

    def onExport(self) -> None:
        state = self.model.state
        if not state.actions["export"].enabled:
            return
        self.ensureRequirements()  # highdicom and the JPEG decoders, which Slicer does not bundle
        name = f"{Path(self.model.case_name).name or 'case'}.{state.format}.dcm"
        path = qt.QFileDialog.getSaveFileName(
            slicer.util.mainWindow(), _("Export the segmentation"), name, _("DICOM files (*.dcm)")
        )
        if path:
            self.model.export(path)

    def onCancel(self) -> None:
        self.model.cancel()

    def render(self, state: ExportState) -> None:
        ui = self.ui
        ui.exportWhatLabel.setText(state.what or _("No case is open."))
        with blocked(ui.exportFormatComboBox):
            ui.exportFormatComboBox.setCurrentIndex(ui.exportFormatComboBox.findData(state.format))
        ui.dicomSourceLabel.setText(state.dicom_source or _("none (the image came as NIfTI or NRRD)"))
        with blocked(ui.sendCheckBox):
            ui.sendCheckBox.setChecked(state.send)
        self.showAction(ui.exportButton, state.actions["export"])
        self.showAction(ui.cancelExportButton, state.actions["cancel"])
        showProgress(ui.exportProgressBar, state.progress)
        last = state.last
        if last is None:
            ui.exportResultLabel.setText("")
        else:
            lines = [_("{path}: {structures}").format(path=last.path, structures=", ".join(last.structures))]
            reasons: dict[str, list[str]] = {}
            for item in last.skipped:  # "structure: why", grouped by why (a protocol's empty structures)
                what, _colon, why = item.partition(": ")
                reasons.setdefault(why, []).append(what)
            lines += [_("left out ({why}): {what}").format(why=why, what=", ".join(w)) for why, w in reasons.items()]
            if last.warnings:  # long (UIDs): their words in the tooltip
                lines.append(_("{count} warning(s): point here to read them").format(count=len(last.warnings)))
            if last.sent:
                lines.append(_("stored on {server}").format(server=state.destination))
            ui.exportResultLabel.setText("\n".join(lines))
        ui.exportResultLabel.setToolTip("\n\n".join(last.warnings) if last is not None else "")
        showMessage(ui.exportMessageLabel, state.message, state.message_is_error)
