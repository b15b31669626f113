"""The export panel's model: the current case's segmentation (the reader's, or the approved final) as a DICOM
SEG or RTSTRUCT tied to the case's DICOM series, optionally stored on a DICOMweb server (STOW-RS).

The DICOM source is the case's series: a local folder (a case opened from DICOM files, or one the user
points at), or a series on a DICOMweb server (``set_dicom_source``). A case known only as a NIfTI or NRRD
image has none, and Export says so. The segmentation is written on the caller's thread (MRML); reading the
series, the export and the sending run in a ``Background`` job (``core.dicom``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..core.dicom.rtstruct import export_rtstruct
from ..core.dicom.seg import export_seg, labels_for_series
from ..core.dicom.series import read_series
from ..core.dicom.web import DicomWebClient, DicomWebSource
from ..core.protocol import Protocol
from ..mrml.segmentation import saveSegmentation
from ..mrml.task_submission import fileNameFor
from .background import Background
from .events import Action, Model, first_off
from .settings import EXPORT_FORMATS
from .task_state import Progress

EXPORT_JOB = "export"


@dataclass(frozen=True)
class ExportResult:
    path: str
    format: str
    structures: tuple[str, ...]
    skipped: tuple[str, ...]  # "structure: why"
    warnings: tuple[str, ...]
    sent: tuple[str, ...]  # SOP instance UIDs the DICOMweb server confirmed


@dataclass(frozen=True)
class ExportState:
    format: str
    what: str  # which segmentation of which case
    dicom_source: str  # the series it refers to, "" when the case has none
    destination: str | None  # the DICOMweb server the export is sent to, when sending
    send: bool
    progress: Progress | None
    last: ExportResult | None
    message: str
    message_is_error: bool
    actions: Mapping[str, Action]


class ExportModel(Model):
    def __init__(self, background: Background, out_dir: Path | None = None, export_format: str = "seg"):
        super().__init__()
        self.background = background
        self.out_dir = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="medannot-export-"))
        self.format = export_format
        self.segmentation_node = None
        self.protocol: Protocol | None = None
        self.case_name = ""
        self.what = ""
        self.dicom_folder: Path | None = None
        self.dicomweb_series: tuple[DicomWebSource, str, str] | None = None
        self.destination: DicomWebSource | None = None
        self.send = False
        self.last: ExportResult | None = None

    # ---- what is exported, from where, to where ---------------------------------------------------------

    def set_case(self, segmentation_node, protocol: Protocol | None, case_name: str = "", what: str = "") -> None:
        """The segmentation to export (None: no case); the workstation sets it when a case opens or a review
        loads. ``what`` says which one ("your segmentation", "the approved final")."""
        self.segmentation_node, self.protocol, self.case_name = segmentation_node, protocol, case_name
        self.what = f"{case_name}: {what}" if segmentation_node is not None else ""
        self.last = None
        self.refresh()

    def set_dicom_source(
        self, folder=None, dicomweb: DicomWebSource | None = None, study_uid: str = "", series_uid: str = ""
    ) -> None:
        """The case's DICOM series: a ``folder`` of its files, or a series on a DICOMweb server (None: none)."""
        self.dicom_folder = Path(folder) if folder else None
        self.dicomweb_series = (dicomweb, study_uid, series_uid) if dicomweb is not None else None
        self.refresh()

    def set_destination(self, source: DicomWebSource | None, send: bool = True) -> None:
        """Send each export to this DICOMweb server (STOW-RS); None or ``send=False``: write the file only."""
        self.destination, self.send = source, bool(send and source is not None)
        self.refresh()

    def choose_format(self, export_format: str) -> bool:
        if export_format not in EXPORT_FORMATS:
            self.tell(f"format: expected one of {', '.join(EXPORT_FORMATS)}, got {export_format!r}", error=True)
            self.refresh()
            return False
        self.format = export_format
        self.refresh()
        return True

    # ---- the state ------------------------------------------------------------------------------------

    def _source_text(self) -> str:
        if self.dicom_folder is not None:
            return f"DICOM folder {self.dicom_folder}"
        if self.dicomweb_series is not None:
            source, _study, series = self.dicomweb_series
            return f"series {series} on {source.url}"
        return ""

    def _build(self) -> ExportState:
        job = self.background.job(EXPORT_JOB)
        actions = {
            "export": first_off(
                (self.segmentation_node is None, "no case is open"),
                (
                    not self._source_text(),
                    "this case has no DICOM series (its image came as NIfTI or NRRD): choose the series' folder",
                ),
                (job is not None, "exporting"),
            ),
            "cancel": first_off(
                (job is None, "nothing runs"),
            ),
        }
        return ExportState(
            self.format,
            self.what,
            self._source_text(),
            self.destination.url if self.destination is not None and self.send else None,
            self.send,
            Progress(*job.progress) if job is not None else None,
            self.last,
            self.message,
            self.message_is_error,
            actions,
        )

    # ---- actions -------------------------------------------------------------------------------------------

    def export(self, path=None) -> bool:
        """Write the export (to ``path``, else ``<out_dir>/<case>.<format>.dcm``) and send it when set to."""
        action = self._build().actions["export"]
        if not action.enabled:
            self.tell(f"export: {action.reason}", error=True)
            self.refresh()
            return False
        stem = fileNameFor(self.case_name or "case")
        target = Path(path) if path else self.out_dir / f"{stem}.{self.format}.dcm"
        labels_path = saveSegmentation(self.segmentation_node, self.out_dir / ".export" / f"{stem}.seg.nrrd")
        protocol, kind, folder, remote = self.protocol, self.format, self.dicom_folder, self.dicomweb_series
        destination = self.destination if self.send else None

        def work(progress, cancel):
            if folder is not None:
                series = read_series(folder, cancel=cancel)
            else:
                source, study, series_uid = remote
                with DicomWebClient(source) as client:
                    series = client.retrieve_series(study, series_uid, cancel=cancel)
            progress(0.4, "series read")
            labels, tags = labels_for_series(labels_path, series, protocol)
            write = export_seg if kind == "seg" else export_rtstruct
            report = write(series, labels, protocol, target, segment_tags=tags)
            progress(0.8, f"{target.name} written")
            sent = []
            if destination is not None:
                with DicomWebClient(destination) as client:
                    sent = client.store([report.path], cancel=cancel)
            return ExportResult(
                str(report.path),
                kind,
                tuple(report.structures),
                tuple(f"{what}: {why}" for what, why in report.skipped),
                tuple(report.warnings),
                tuple(sent),
            )

        def done(result: ExportResult) -> None:
            labels_path.unlink(missing_ok=True)
            self.last = result
            sent = f", sent to {destination.url}" if result.sent else ""
            self.tell(f"{Path(result.path).name}: {len(result.structures)} structure(s){sent}")
            self.refresh()

        def failed(error) -> None:
            labels_path.unlink(missing_ok=True)
            self.tell(f"export: {type(error).__name__}: {error}", error=True)
            self.refresh()

        self.background.start(EXPORT_JOB, work, done, failed)
        self.tell(f"exporting {self.case_name} as {kind.upper()}")
        self.refresh()
        return True

    def cancel(self) -> bool:
        return self.background.cancel(EXPORT_JOB)

    def poll(self) -> bool:
        """Hand finished jobs over (on this thread) and announce changes: the model's own pump."""
        handed = self.background.poll()
        return self.refresh() or bool(handed)
