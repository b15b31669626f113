"""Local mode: a reading list without a server, as SlicerCaseIterator does. The cases come from a folder
(``FolderCaseSource``) or a CSV file (``CsvCaseSource``); the reader moves through them with ``next`` and
``previous``, each case opens as a ``TaskSession`` and its result is written to the output folder:

- ``<case>.seg.nrrd``: the segmentation, as it would be submitted;
- ``<case>.json``: the submission metadata (times, states, history, answers, overrides);
- ``<case>.ai.seg.nrrd``: the AI's proposal, so a reopened case still knows what the AI proposed;
- ``reading-list.json``: where the reader is and which cases are done.

Everything is resumable: a case with a saved result reopens from it (times carry on), and a new source on
the same output folder starts where the reader left off.
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..core.activity import DEFAULT_IDLE_AFTER_S
from ..core.presegment_files import IMAGE_SUFFIXES
from ..core.protocol import Protocol
from .task_session import TaskSession
from .task_submission import fileNameFor
from .volumes import fileStem

STATE_FILE = "reading-list.json"
NEW, DRAFT, DONE = "new", "draft", "done"


class CaseSourceError(ValueError):
    """A reading list that cannot be used; the message names the file, line and column."""


@dataclass(frozen=True)
class LocalCase:
    name: str
    image: Path
    segmentation: Path | None = None  # where the reader starts (earlier work, another reader's)
    ai_segmentation: Path | None = None  # the AI's proposal


@dataclass(frozen=True)
class ResultFiles:
    segmentation: Path
    metadata: Path
    proposal: Path


class CaseSource:
    """An ordered list of cases, the reader's position in it, and the results folder."""

    def __init__(self, cases: list[LocalCase], out_dir, description: str, label_names: Mapping[int, str] | None = None):
        if not cases:
            raise CaseSourceError(f"{description}: no cases")
        names = [case.name for case in cases]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise CaseSourceError(f"{description}: case names used more than once: {', '.join(twice)}")
        self.cases = list(cases)
        self.description = description
        self.label_names = dict(label_names) if label_names else None
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        saved = self._readState()
        self._done = {name for name, status in saved.get("cases", {}).items() if status == DONE and name in names}
        position = saved.get("position")
        self.position = names.index(position) if position in names else self._firstUnfinished()

    def __len__(self) -> int:
        return len(self.cases)

    def __iter__(self):
        return iter(self.cases)

    @property
    def current(self) -> LocalCase:
        return self.cases[self.position]

    def next(self) -> LocalCase | None:
        """Move to the next case; None (and no move) at the end of the list."""
        if self.position + 1 >= len(self.cases):
            return None
        self.position += 1
        self._writeState()
        return self.current

    def previous(self) -> LocalCase | None:
        if self.position == 0:
            return None
        self.position -= 1
        self._writeState()
        return self.current

    def goto(self, name: str) -> LocalCase:
        names = [case.name for case in self.cases]
        if name not in names:
            raise CaseSourceError(f"{self.description}: no case named '{name}'")
        self.position = names.index(name)
        self._writeState()
        return self.current

    def nextUnfinished(self) -> LocalCase | None:
        """Move to the first case after the current one that is not done (None when all are)."""
        for index in range(self.position + 1, len(self.cases)):
            if self.status(self.cases[index]) != DONE:
                self.position = index
                self._writeState()
                return self.current
        return None

    def results(self, case: LocalCase | None = None) -> ResultFiles:
        name = fileNameFor((case or self.current).name)
        return ResultFiles(
            self.out_dir / f"{name}.seg.nrrd", self.out_dir / f"{name}.json", self.out_dir / f"{name}.ai.seg.nrrd"
        )

    def status(self, case: LocalCase | None = None) -> str:
        """``new``, ``draft`` (saved, gate not met or not finished) or ``done``."""
        case = case or self.current
        if case.name in self._done:
            return DONE
        return DRAFT if self.results(case).metadata.is_file() else NEW

    def open(
        self,
        context,
        protocol: Protocol,
        clock: Callable[[], float] = time.monotonic,
        idle_after_s: float = DEFAULT_IDLE_AFTER_S,
    ) -> TaskSession:
        """The current case as a task session, resumed from its saved result when there is one."""
        case, files = self.current, self.results()
        resume = None
        segmentation, ai = case.segmentation, case.ai_segmentation
        if files.metadata.is_file() and files.segmentation.is_file():
            try:
                resume = json.loads(files.metadata.read_text(encoding="utf-8"))
            except ValueError as error:
                raise CaseSourceError(f"{files.metadata}: not valid JSON ({error})") from None
            segmentation = files.segmentation
            ai = files.proposal if files.proposal.is_file() else ai
        info = {"case_name": case.name, "source": self.description, "index": self.position}
        return TaskSession.open(
            context,
            protocol,
            case.image,
            ai,
            info,
            clock,
            idle_after_s=idle_after_s,
            segmentation_path=segmentation,
            label_names=self.label_names,
            resume=resume,
            name=case.name,
        )

    def save(self, session: TaskSession, done: bool = True) -> tuple[Path, dict]:
        """Write the session's result for the current case. ``done`` requires the protocol gate to be met
        (as a submission does, ``NotReadyError`` otherwise); a draft is saved as it is."""
        case, files = self.current, self.results()
        if session.name != case.name:
            raise CaseSourceError(f"the session holds case '{session.name}', the reading list is at '{case.name}'")
        _path, metadata = session.pack(self.out_dir, require_ready=done)  # writes files.segmentation
        metadata["case"]["status"] = DONE if done else DRAFT
        partial = files.metadata.with_name(files.metadata.name + ".partial")
        partial.write_text(json.dumps(metadata, indent=1, allow_nan=False) + "\n", encoding="utf-8")
        os.replace(partial, files.metadata)
        if session.saveProposal(files.proposal) is None:
            files.proposal.unlink(missing_ok=True)
        if done:
            self._done.add(case.name)
        else:
            self._done.discard(case.name)
        self._writeState()
        return files.segmentation, metadata

    def _firstUnfinished(self) -> int:
        return next((i for i, case in enumerate(self.cases) if self.status(case) != DONE), 0)

    def _readState(self) -> dict:
        path = self.out_dir / STATE_FILE
        if not path.is_file():
            return {}
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as error:
            raise CaseSourceError(f"{path}: not valid JSON ({error})") from None
        return saved if isinstance(saved, dict) else {}

    def _writeState(self) -> None:
        state = {
            "source": self.description,
            "position": self.current.name,
            "cases": {case.name: self.status(case) for case in self.cases},
        }
        path = self.out_dir / STATE_FILE
        partial = path.with_name(path.name + ".partial")
        partial.write_text(json.dumps(state, indent=1) + "\n", encoding="utf-8")
        os.replace(partial, path)


def _isImage(path: Path) -> bool:
    return path.is_file() and path.name.endswith(IMAGE_SUFFIXES) and not path.name.endswith(".seg.nrrd")


class FolderCaseSource(CaseSource):
    """Every image file (NIfTI, NRRD, MHA) and every sub-folder (a DICOM series) of ``folder``, sorted by name.
    The AI's proposal of ``<case>`` is ``<case>.seg.nrrd`` in ``ai_folder`` (default: ``folder``)."""

    def __init__(self, folder, out_dir, ai_folder=None, label_names: Mapping[int, str] | None = None):
        folder = Path(folder)
        if not folder.is_dir():
            raise CaseSourceError(f"{folder}: no such folder")
        ai_folder = Path(ai_folder) if ai_folder else folder
        cases = []
        for path in sorted(folder.iterdir()):
            if path.name.startswith(".") or path.resolve() == Path(out_dir).resolve():
                continue
            if _isImage(path) or (path.is_dir() and any(p.is_file() for p in path.iterdir())):
                name = fileStem(path) if path.is_file() else path.name
                ai = ai_folder / f"{name}.seg.nrrd"
                cases.append(LocalCase(name, path, None, ai if ai.is_file() else None))
        super().__init__(cases, out_dir, str(folder), label_names)


class CsvCaseSource(CaseSource):
    """One case per row of a CSV file: an ``image`` column (a file or a DICOM folder), optional
    ``segmentation`` (where the reader starts), ``ai_segmentation`` (the AI's proposal) and ``name``
    columns (other names through ``columns``). Relative paths are read from the CSV file's folder."""

    COLUMNS = {"image": "image", "segmentation": "segmentation", "ai_segmentation": "ai_segmentation", "name": "name"}

    def __init__(
        self, csv_path, out_dir, columns: Mapping[str, str] | None = None, label_names: Mapping[int, str] | None = None
    ):
        csv_path = Path(csv_path)
        if not csv_path.is_file():
            raise CaseSourceError(f"{csv_path}: no such file")
        unknown = sorted(set(columns or {}) - set(self.COLUMNS))
        if unknown:
            raise CaseSourceError(f"columns: unknown keys {', '.join(unknown)} (known: {', '.join(self.COLUMNS)})")
        names = {**self.COLUMNS, **(columns or {})}
        with csv_path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = reader.fieldnames or []
            if names["image"] not in header:
                raise CaseSourceError(f"{csv_path}: no column '{names['image']}' (columns: {', '.join(header)})")
            cases = [self._case(csv_path, line, row, names) for line, row in enumerate(reader, start=2)]
        super().__init__(cases, out_dir, str(csv_path), label_names)

    @staticmethod
    def _case(csv_path: Path, line: int, row: dict, names: Mapping[str, str]) -> LocalCase:
        def path(key: str, required: bool = False) -> Path | None:
            text = (row.get(names[key]) or "").strip()
            if not text:
                if required:
                    raise CaseSourceError(f"{csv_path}:{line}: column '{names[key]}' is empty")
                return None
            found = Path(text) if Path(text).is_absolute() else csv_path.parent / text
            if not found.exists():
                raise CaseSourceError(f"{csv_path}:{line}: column '{names[key]}': {found}: no such file")
            return found

        image = path("image", required=True)
        name = (row.get(names["name"]) or "").strip() or (fileStem(image) if image.is_file() else image.name)
        return LocalCase(name, image, path("segmentation"), path("ai_segmentation"))
