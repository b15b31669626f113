"""A claimed task in the scene: the case image, its AI proposal and the protocol's segments; each structure's
state, history and active time; the protocol gate; the submission packed for the outbox; the scene freed.

States of a structure (``StructureState.state``):

- ``empty``: nothing drawn, no AI proposal;
- ``suggested``: holds the AI's proposal, not reviewed yet;
- ``accepted``: the AI's proposal kept as it is;
- ``rejected``: the AI's proposal removed;
- ``refined``: holds the reader's drawing (an edited proposal, or drawn from scratch);
- ``done``: the reader marked it finished (the state before stays in ``StructureState.edit``);
- ``absent``: an optional structure declared not present in this image.

Edits made with Slicer's Segment Editor, or by any code going through the Segmentations logic, reach the
session through the segmentation's ``SourceRepresentationModified`` event: the structure becomes
``refined`` and takes the focus of the activity clock. Everything here runs on the main thread; engines run
in ``core/jobs.py`` and hand their result to ``applyEngineResult``. Subscribers are called with
``(event, key)``: ``("state", structure id)``, ``("selected", structure id or None)``, ``("answer",
question id)``, ``("override", structure id)``, ``("check", None)``, ``("closed", None)``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import slicer
import vtk

from ..core import provenance as prov
from ..core.activity import DEFAULT_IDLE_AFTER_S, ActiveTimes, ActivityClock
from ..core.engines.base import match_protocol
from ..core.protocol import Protocol
from ..core.protocol_check import ABSENT as CHECK_ABSENT
from ..core.protocol_check import RULES, layer_crops
from .presegment import PROPOSAL_ROLE, imageFromVolume, proposalNode, segmentByStructureTag, setProposalMask
from .protocol_segments import STATUS_TAG, STRUCTURE_TAG, declareAbsent, structureSegments
from .segmentation import getTag, saveSegmentation, segmentLayers, segmentMasks, setSegmentMask
from .task_loading import LoadedCase, TaskSessionError, caseName, loadCase, removeNodes
from .task_states import (
    ABSENT,
    ACCEPTED,
    AI_STATES,
    DONE,
    EDIT_STATES,
    EMPTY,
    REFINED,
    REJECTED,
    STATE_NAMES,
    SUGGESTED,
    NotReadyError,
    SessionCheck,
    StructureState,
    utcnow,
)
from .task_submission import checkSession, packSession
from .volumes import arrayFromVolume

__all__ = [
    "ABSENT",
    "ACCEPTED",
    "DONE",
    "EDIT_STATES",
    "EMPTY",
    "REFINED",
    "REJECTED",
    "STATE_NAMES",
    "SUGGESTED",
    "NotReadyError",
    "SessionCheck",
    "StructureState",
    "TaskSession",
    "TaskSessionError",
]


class TaskSession:
    """Build with ``TaskSession.open``; see the module docstring."""

    def __init__(
        self,
        context,
        protocol: Protocol,
        loaded: LoadedCase,
        imagePath: Path,
        name: str,
        taskInfo: dict,
        activity: ActivityClock,
    ):
        self.context, self.protocol, self.name, self.imagePath = context, protocol, name, imagePath
        self.volumeNode, self.segmentationNode = loaded.volumeNode, loaded.segmentationNode
        self.task_info = taskInfo
        self.activity = activity
        self.dropped = loaded.dropped  # segment names of the starting files that the protocol lacks (left out)
        self.ai_sources = loaded.sources  # where proposals came from: files and engine runs
        self.answers: dict[str, str] = {}
        self.selected: str | None = None
        self.open_seconds = 0.0
        self._nodes = set(loaded.nodes)
        self._overrides: dict[tuple[str, str | None], str] = {}
        self._states = {s.id: StructureState(s.id, s.name, s.required) for s in protocol.structures}
        self._listeners: list[Callable[[str, str | None], None]] = []
        self._quietDepth = 0
        self._closed = False
        self._observed = self.segmentationNode.GetSegmentation()

        @vtk.calldata_type(vtk.VTK_STRING)
        def modified(caller, event, segmentId=None):
            self._onSegmentModified(segmentId)

        self._observer = self._observed.AddObserver(slicer.vtkSegmentation.SourceRepresentationModified, modified)

    # ---- opening -------------------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        context,
        protocol: Protocol,
        image_path,
        ai_segmentation_path=None,
        task_info: Mapping | None = None,
        clock: Callable[[], float] = time.monotonic,
        *,
        idle_after_s: float = DEFAULT_IDLE_AFTER_S,
        segmentation_path=None,
        label_names: Mapping[int, str] | None = None,
        ai_provenance: Mapping | None = None,
        resume: Mapping | None = None,
        name: str | None = None,
    ) -> TaskSession:
        """Load a case: the image (file or DICOM series), the starting segmentation (``segmentation_path``: the
        reader's earlier work, else the AI's file) reduced to the protocol's structures, the AI proposal
        kept aside; the protocol's window preset on the image. ``resume`` is the metadata of an earlier
        ``pack`` of this case (times, states, history, answers and overrides continue from it). A plain
        labelmap needs ``label_names``; an AI file without AI tags is credited to ``ai_provenance``.
        On error nothing stays in the scene."""
        started = time.perf_counter()
        task_info = dict(task_info or {})
        name = name or caseName(image_path, task_info)
        loaded = loadCase(
            context, protocol, image_path, name, ai_segmentation_path, segmentation_path, label_names, ai_provenance
        )
        try:
            carried = ActiveTimes.from_json((resume or {}).get("timing"), "resume.timing")
            session = cls(
                context,
                protocol,
                loaded,
                Path(image_path),
                name,
                task_info,
                ActivityClock(idle_after_s, clock, carried),
            )
            source = Path(ai_segmentation_path).name if ai_segmentation_path else None
            session._initialStates(loaded.proposals, source, drawn=segmentation_path is not None)
            if resume:
                session._resume(resume)
        except Exception:
            removeNodes(context.scene, loaded.nodes)
            raise
        session.open_seconds = time.perf_counter() - started
        return session

    def _initialStates(self, proposals: dict[str, dict], source: str | None, drawn: bool) -> None:
        """States from the loaded segments; with ``drawn`` (the reader's earlier work) what holds voxels is theirs."""
        segmentation = self.segmentationNode.GetSegmentation()
        segments = structureSegments(self.segmentationNode, self.protocol)
        if drawn:
            layers, where, _ = segmentLayers(self.segmentationNode, list(segments.values()))
            crops = layer_crops(layers, {sid: where[segmentId] for sid, segmentId in segments.items()})
            for structureId, crop in crops.items():
                if crop is not None and structureId not in proposals:
                    self._states[structureId].edit = REFINED
        for structureId, segmentId in segments.items():
            state, segment = self._states[structureId], segmentation.GetSegment(segmentId)
            if structureId in proposals:
                state.ai = proposals[structureId]
                tagged = getTag(segment, prov.STATE_TAG)
                state.edit = tagged if tagged in AI_STATES else SUGGESTED
                state.history.append(self._proposedEntry(state.ai, source=source))
            elif getTag(segment, STATUS_TAG) == CHECK_ABSENT:
                state.absent = True

    def _resume(self, saved: Mapping) -> None:
        segments = saved.get("segments") or {}
        for structureId, report in segments.items():
            if structureId not in self._states or not isinstance(report, Mapping):
                continue
            state = self._states[structureId]
            saved_state = report.get("state")
            state.absent = saved_state == ABSENT
            state.edit = saved_state if saved_state in EDIT_STATES else state.edit
            state.done = bool(report.get("done"))
            history = [dict(e) for e in report.get("history") or [] if isinstance(e, Mapping)]
            state.history = [e for e in history if e.get("event") != "final"] or state.history
        for questionId, value in (saved.get("answers") or {}).items():
            self.answer(questionId, value)
        for item in saved.get("overrides") or []:
            self._setOverride(item.get("structure"), item.get("rule"), item.get("reason"))

    # ---- reading ----------------------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def proposalNode(self):
        return self.segmentationNode.GetNodeReference(PROPOSAL_ROLE)

    @property
    def structures(self) -> list[StructureState]:
        return list(self._states.values())

    def structure(self, structureId: str) -> StructureState:
        if structureId not in self._states:
            raise TaskSessionError(f"structure '{structureId}' is not in protocol {self.protocol.label}")
        return self._states[structureId]

    def state(self, structureId: str) -> str:
        return self.structure(structureId).state

    def segmentId(self, structureId: str) -> str:
        """The segment of a structure (what the Segment Editor selects)."""
        structure = self.structure(structureId)
        found = structureSegments(self.segmentationNode, self.protocol).get(structureId)
        if found is None:
            kind = self.protocol.structure(structureId).kind
            raise TaskSessionError(f"'{structure.name}' has no segment" + (f" (a {kind})" if kind != "segment" else ""))
        return found

    def structureOfSegment(self, segmentId: str) -> str | None:
        segment = self.segmentationNode.GetSegmentation().GetSegment(segmentId)
        structureId = getTag(segment, STRUCTURE_TAG) if segment is not None else None
        return structureId if structureId in self._states else None

    def mask(self, structureId: str) -> np.ndarray:
        """The structure's current mask, boolean (k, j, i) on the image grid."""
        segmentId = self.segmentId(structureId)
        return segmentMasks(self.segmentationNode, [segmentId])[0][segmentId]

    def times(self) -> ActiveTimes:
        return self.activity.times()

    @property
    def overrides(self) -> list[dict]:
        return [
            {"structure": s, **({"rule": r} if r else {}), "reason": reason}
            for (s, r), reason in self._overrides.items()
        ]

    def unanswered(self) -> list[str]:
        return [q.id for q in self.protocol.questions if q.required and q.id not in self.answers]

    # ---- events and activity -------------------------------------------------------------------------------------

    def subscribe(self, listener: Callable[[str, str | None], None]) -> Callable[[], None]:
        """Call ``listener(event, key)`` on every change; returns the function that unsubscribes it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _notify(self, event: str, key: str | None = None) -> None:
        for listener in list(self._listeners):
            listener(event, key)

    def select(self, structureId: str | None) -> None:
        """The reader selected a structure (None: none); its active time starts counting."""
        self._requireOpen()
        if structureId is not None:
            self.structure(structureId)
        self.activity.select(structureId)
        self.selected = structureId
        self._notify("selected", structureId)

    def touch(self, structureId: str | None = None) -> None:
        """Any interaction of the reader (a click, a scroll, a key): keeps the clock counting."""
        self.activity.activity(structureId)

    def pause(self) -> None:
        self.activity.pause()

    def resume(self) -> None:
        self.activity.resume()

    # ---- AI ----------------------------------------------------------------------------------------------------

    def engineImage(self):
        """The case image as SimpleITK (a copy) for an engine's ``run``."""
        return imageFromVolume(self.volumeNode)

    def engineStructures(self, info, structures=None) -> dict[str, list[str]]:
        """Protocol structure id -> the engine's structure ids that make it (lung lobes join their lung)."""
        matched = match_protocol(info, self.protocol, parts=True)
        found: dict[str, list[str]] = {}
        for engineId, structure in matched.items():
            if structure.kind == "segment" and (structures is None or structure.id in structures):
                found.setdefault(structure.id, []).append(engineId)
        return found

    def runEngine(self, engine, structures=None, progress=None, cancel=None) -> dict:
        """Run ``engine`` here and apply its result (for scripts and tests: a panel runs it as a job and
        calls ``applyEngineResult`` on the main thread)."""
        wanted = [e for ids in self.engineStructures(engine.info(), structures).values() for e in ids]
        if not wanted:
            raise TaskSessionError(f"engine '{engine.info().name}' produces no structure of {self.protocol.label}")
        result = engine.run(self.engineImage(), wanted, progress=progress, cancel=cancel)
        return self.applyEngineResult(engine.info(), result, structures)

    def applyEngineResult(self, info, result, structures=None) -> dict:
        """Put an engine's proposal into the protocol's segments (``structures`` limits which), replacing their
        content (a panel asks first when the reader drew there): each becomes ``suggested`` with its provenance,
        and the proposal is a new version in its history (the first, for a structure that had none). Returns
        ``{"structures": {structure id: engine ids}, "dropped": engine ids the protocol lacks}``."""
        self._requireOpen()
        shape = arrayFromVolume(self.volumeNode).shape
        if result.labels.shape != shape:
            raise TaskSessionError(f"engine labels {result.labels.shape} are not on the image's grid {shape}")
        produced = set(result.names.values())
        plan = {sid: [e for e in ids if e in produced] for sid, ids in self.engineStructures(info, structures).items()}
        plan = {sid: ids for sid, ids in plan.items() if ids}
        values = {name: value for value, name in result.names.items()}
        proposal = proposalNode(self.context, self.segmentationNode, self.volumeNode)
        for structureId, engineIds in plan.items():
            mask = np.isin(result.labels, [values[e] for e in engineIds])
            confidences = [result.confidence[e] for e in engineIds if result.confidence.get(e) is not None]
            tags = prov.provenance_tags(result.provenance, min(confidences) if confidences else None)
            self._settleProposal(structureId)
            segmentId = self.segmentId(structureId)
            with self._quiet():
                setSegmentMask(self.segmentationNode, segmentId, mask)
                setProposalMask(proposal, self.protocol.structure(structureId), mask)
            for node, nodeSegment in (
                (self.segmentationNode, segmentId),
                (proposal, segmentByStructureTag(proposal, structureId)),
            ):
                for key, value in tags.items():
                    node.GetSegmentation().GetSegment(nodeSegment).SetTag(key, value)
            state = self._states[structureId]
            if state.absent:
                declareAbsent(self.segmentationNode, self.protocol, structureId, False)
            state.ai = prov.read_provenance(tags)
            state.edit, state.done, state.absent = SUGGESTED, False, False
            entry = self._proposedEntry(state.ai, source=f"engine {info.name}")
            entry.update(voxels=int(np.count_nonzero(mask)), sha256=prov.mask_sha256(mask))
            state.history.append(entry)
            self._notify("state", structureId)
        self._nodes.add(proposal.GetID())
        dropped = sorted(produced - {e for ids in plan.values() for e in ids})
        self.ai_sources.append(
            {
                "source": "engine",
                "engine": info.name,
                "version": info.version,
                "uncertainty": round(float(result.uncertainty), 4),
                "structures": sorted(plan),
            }
        )
        self.activity.activity()
        return {"structures": plan, "dropped": dropped}

    def _proposedEntry(self, provenance: dict, source: str | None) -> dict:
        entry = {"event": "proposed", "by": "ai", "at": utcnow(), "active_s": self._activeNow()}
        entry.update({k: provenance.get(k) for k in ("engine", "version", "parameters", "started", "confidence")})
        if source:
            entry["source"] = source
        return entry

    def _proposalMask(self, structureId: str) -> np.ndarray | None:
        proposal = self.proposalNode
        segmentId = segmentByStructureTag(proposal, structureId) if proposal is not None else None
        if segmentId is None:
            return None
        return segmentMasks(proposal, [segmentId])[0][segmentId]

    def _settleProposal(self, structureId: str) -> None:
        """Fill the voxel count and fingerprint of the latest proposal entry from the proposal node (done
        lazily: opening a case does not read every proposed mask)."""
        entries = [e for e in self._states[structureId].history if e.get("event") == "proposed"]
        if entries and "sha256" not in entries[-1]:
            mask = self._proposalMask(structureId)
            if mask is not None:
                entries[-1].update(voxels=int(np.count_nonzero(mask)), sha256=prov.mask_sha256(mask))

    # ---- the reader's decisions ----------------------------------------------------------------------------------

    def accept(self, structureId: str) -> None:
        """Keep the AI's proposal as it is (after a reject it comes back)."""
        state = self._aiState(structureId)
        if state.edit == REFINED:
            raise TaskSessionError(
                f"'{state.name}' was edited after the AI's proposal: accepting would discard the edits; revert it first"
            )
        if state.edit == ACCEPTED:
            return
        if state.edit == REJECTED:
            self._restoreProposal(structureId)
        self._decide(state, ACCEPTED, "accepted")

    def reject(self, structureId: str) -> None:
        """Remove the AI's proposal (it stays recorded for the statistics)."""
        state = self._aiState(structureId)
        with self._quiet():
            setSegmentMask(self.segmentationNode, self.segmentId(structureId), np.zeros(self._gridShape(), bool))
        self._decide(state, REJECTED, "rejected")

    def revert(self, structureId: str) -> None:
        """Back to the AI's proposal, discarding the reader's edits."""
        state = self._aiState(structureId)
        self._restoreProposal(structureId)
        self._decide(state, SUGGESTED, "reverted")

    def setMask(self, structureId: str, mask: np.ndarray) -> None:
        """Replace a structure's content with the reader's mask (boolean, k j i): an edit, as the editor's."""
        self._requireOpen()
        segmentId = self.segmentId(structureId)
        with self._quiet():
            setSegmentMask(self.segmentationNode, segmentId, np.asarray(mask, bool))
        self._noteEdit(structureId)

    def markDone(self, structureId: str, done: bool = True) -> None:
        """The reader finished a structure (or takes it up again)."""
        self._requireOpen()
        state = self.structure(structureId)
        if state.done != done:
            state.done = done
            self._record(structureId, "done" if done else "reopened")
        self.activity.activity(structureId)
        self._notify("state", structureId)

    def declareAbsent(self, structureId: str, absent: bool = True) -> None:
        """An optional structure is not in this image (or is after all)."""
        self._requireOpen()
        state = self.structure(structureId)
        try:
            declareAbsent(self.segmentationNode, self.protocol, structureId, absent)
        except (ValueError, KeyError) as error:
            raise TaskSessionError(str(error.args[0])) from None
        if state.absent != absent:
            state.absent = absent
            self._record(structureId, "absent" if absent else "present")
        self.activity.activity(structureId)
        self._notify("state", structureId)

    def override(self, structureId: str, rule: str | None, reason: str) -> None:
        """Keep a structure that fails ``rule`` (None: any of its rules) for ``reason``, sent to the server."""
        self._requireOpen()
        self._setOverride(structureId, rule, reason)
        self._record(structureId, "override", rule=rule, reason=reason)
        self._notify("override", structureId)

    def _setOverride(self, structureId, rule, reason) -> None:
        self.structure(structureId)
        if rule is not None and rule not in RULES:
            raise TaskSessionError(f"rule: expected one of {', '.join(RULES)} or none, got {rule!r}")
        if not isinstance(reason, str) or not reason.strip() or len(reason) > 2000:
            raise TaskSessionError(f"override of '{structureId}': a reason is required (1-2000 characters)")
        self._overrides[(structureId, rule)] = reason

    def clearOverride(self, structureId: str, rule: str | None = None) -> None:
        if self._overrides.pop((structureId, rule), None) is not None:
            self._notify("override", structureId)

    def answer(self, questionId: str, value: str | None) -> None:
        """Answer a case question of the protocol (None clears the answer)."""
        self._requireOpen()
        question = next((q for q in self.protocol.questions if q.id == questionId), None)
        if question is None:
            known = ", ".join(q.id for q in self.protocol.questions) or "none"
            raise TaskSessionError(f"question '{questionId}' is not in {self.protocol.label} (its questions: {known})")
        if value is None:
            self.answers.pop(questionId, None)
        elif value not in question.options:
            raise TaskSessionError(
                f"answer to '{questionId}': expected one of {', '.join(question.options)}, got {value!r}"
            )
        else:
            self.answers[questionId] = value
        self.activity.activity()
        self._notify("answer", questionId)

    def _aiState(self, structureId: str) -> StructureState:
        self._requireOpen()
        state = self.structure(structureId)
        proposal = self.proposalNode
        if state.ai is None or proposal is None or segmentByStructureTag(proposal, structureId) is None:
            raise TaskSessionError(f"'{state.name}' has no AI proposal")
        return state

    def _restoreProposal(self, structureId: str) -> None:
        with self._quiet():
            setSegmentMask(self.segmentationNode, self.segmentId(structureId), self._proposalMask(structureId))

    def _decide(self, state: StructureState, edit: str, event: str) -> None:
        segment = self.segmentationNode.GetSegmentation().GetSegment(self.segmentId(state.structure_id))
        segment.SetTag(prov.STATE_TAG, AI_STATES[edit])
        state.edit, state.done = edit, False
        self._record(state.structure_id, event)
        self.activity.activity(state.structure_id)
        self._notify("state", state.structure_id)

    def _record(self, structureId: str, event: str, **fields) -> None:
        entry = {"event": event, "by": "reader", "at": utcnow(), "active_s": self._activeNow()}
        entry.update({k: v for k, v in fields.items() if v is not None})
        self._states[structureId].history.append(entry)

    def _activeNow(self) -> float:
        return round(self.activity.times().case_s, 3)

    # ---- edits seen in the scene -----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _quiet(self):
        """The session's own changes to segments are not the reader's edits."""
        self._quietDepth += 1
        try:
            yield
        finally:
            self._quietDepth -= 1

    def _onSegmentModified(self, segmentId: str | None) -> None:
        if self._quietDepth or self._closed or not segmentId:
            return
        structureId = self.structureOfSegment(segmentId)
        if structureId is not None:
            self._noteEdit(structureId)

    def _noteEdit(self, structureId: str) -> None:
        state = self._states[structureId]
        self.activity.activity(structureId)
        if state.absent:
            declareAbsent(self.segmentationNode, self.protocol, structureId, False)
            state.absent = False
            self._record(structureId, "present")
        last = state.history[-1] if state.history else None
        if last is not None and last.get("event") == "edited":
            last["edits"] += 1
            last["last_at"], last["last_active_s"] = utcnow(), self._activeNow()
        else:
            self._record(structureId, "edited", edits=1)
        state.done = False
        if state.edit != REFINED:
            state.edit = REFINED
            if state.ai is not None:
                segment = self.segmentationNode.GetSegmentation().GetSegment(self.segmentId(structureId))
                segment.SetTag(prov.STATE_TAG, prov.REFINED)
        self._notify("state", structureId)

    # ---- the gate, the submission, the end ------------------------------------------------------------------------

    def check(self) -> SessionCheck:
        """The protocol gate on the current content: each blocking rule with the reader's override reason, if
        any; required questions unanswered; segments the protocol lacks. Status tags are updated."""
        return checkSession(self)

    def pack(self, out_dir, require_ready: bool = True) -> tuple[Path, dict]:
        """Write ``<case>.seg.nrrd`` into ``out_dir``; return its path and the submission metadata, ready for
        the outbox (see ``task_submission.packSession``). An unmet gate raises ``NotReadyError`` unless
        ``require_ready`` is False (a local draft)."""
        return packSession(self, out_dir, require_ready)

    def saveProposal(self, path) -> Path | None:
        """Write the AI proposal as a ``.seg.nrrd`` (a local case resumes from it); None without a proposal."""
        proposal = self.proposalNode
        if proposal is None or proposal.GetSegmentation().GetNumberOfSegments() == 0:
            return None
        return saveSegmentation(proposal, path)

    def close(self) -> None:
        """Remove every node the session made (image, segmentation, proposal, their display and storage)."""
        if self._closed:
            return
        self._observed.RemoveObserver(self._observer)
        proposal = self.proposalNode
        if proposal is not None:
            self._nodes.add(proposal.GetID())
        removeNodes(self.context.scene, sorted(self._nodes))
        self._closed = True
        self.activity.pause()
        self._notify("closed")
        self._listeners.clear()

    def _requireOpen(self) -> None:
        if self._closed:
            raise TaskSessionError(f"the session of case '{self.name}' is closed")

    def _gridShape(self) -> tuple[int, ...]:
        return arrayFromVolume(self.volumeNode).shape
