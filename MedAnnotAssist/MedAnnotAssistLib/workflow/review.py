"""The review panel's model: a case's readers and the server's consensus in the scene, the agreement per
structure (verdict, Dice, HD95), readers on and off, the disagreement map over the CT in the slice views and
in volume rendering, a decision per structure (the consensus, one reader's, or the reviewer's edit), and
Approve (the final must pass the protocol's blocking rules, or each failure gets a reason) or Return to
readers with a comment. A case with one reader has no consensus (the server moves it to review at the submit):
the reader's segmentation is the proposal, shown as the consensus is, with no disagreement map and rows that
say "one reader"; the decisions are the same.

A review task comes from the task model (``begin``); ``open_case`` shows any case the caller may see (a
reader sees nothing of the others' work until approval: the ``blinded`` stage). Downloads, the final's rule
check and the decision run in ``Background`` jobs; the scene is built in ``poll()``.

Events besides ``changed``: ``selected`` (``segmentation_node_id``, ``segment_id``: the view selects that
segment for editing), ``decided`` (``decision``: approve or return, ``answer``: the server's), ``loaded`` (the
case is in the scene), ``closed`` (it left the scene).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..core.labelio import ReaderLabels, read_reader
from ..core.protocol import Protocol
from ..core.protocol_check import check_reader
from ..core.queue_errors import Blinded, NotFound, ProtocolRejected, QueueError
from ..mrml.rendering import setupVolumeRendering
from ..mrml.review import ReviewSession, showInSliceViews
from ..mrml.segmentation import saveSegmentation
from ..mrml.task_loading import applyWindow
from ..mrml.volumes import loadVolume
from .background import Background
from .events import Model, first_off
from .review_state import (
    BLINDED,
    CONSENSUS,
    DECIDED,
    EDITED,
    LOADING,
    NO_REVIEW,
    ONE_READER,
    READER,
    READY,
    WAITING,
    AgreementRow,
    ReaderRow,
    ReviewState,
)
from .task_state import error_text

LOAD_JOB, CHECK_JOB, DECIDE_JOB, WAIT_JOB = "review files", "final check", "decision", "consensus wait"
STILL_READING = "the readers are still working: waiting for their submissions"
CT_CONTEXT_PRESET = "CT-Soft-Tissue"  # when the protocol names no volume rendering preset


def _latest(submissions: list[dict]) -> list[dict]:
    """The newest submission of each reader's task (a returned reader's new one replaces the earlier), as the
    server's review takes them."""
    newest = {item["task_id"]: item for item in sorted(submissions, key=lambda s: s["id"])}
    return sorted(newest.values(), key=lambda s: s["id"])


def _mean(values) -> float | None:
    numbers = [float(v) for v in values if isinstance(v, int | float) and np.isfinite(v)]
    return round(sum(numbers) / len(numbers), 4) if numbers else None


class ReviewModel(Model):
    """``anonymous_readers``: show readers as "Reader 1", "Reader 2" (by submission order) instead of names."""

    def __init__(
        self,
        context,
        background: Background,
        *,
        cache=None,
        work_dir: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        poll_s: float = 2.0,
        anonymous_readers: bool = False,
    ):
        super().__init__()
        self.context, self.background, self.cache, self.clock = context, background, cache, clock
        self.work_dir = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="medannot-review-"))
        self.poll_s, self.anonymous_readers = poll_s, anonymous_readers
        self._reset()

    def _reset(self) -> None:
        self.stage, self.client, self.project_id, self.protocol = NO_REVIEW, None, None, None
        self.task: dict | None = None
        self.case: dict | None = None
        self.consensus: dict | None = None
        self.one_reader: str | None = None  # the single reader's name: their segmentation is the proposal
        self.submissions: list[dict] = []
        self.files: dict = {}
        self.review: ReviewSession | None = None
        self.final_node = None  # the approved final, when the case is approved
        self.decisions: dict[str, tuple[str, str | None]] = {}
        self.overrides: dict[tuple[str, str | None], str] = {}
        self.failures: dict[str, list[tuple[str, str]]] = {}  # structure -> (rule, message) the final would fail
        self.visible: set[str] = set()
        self.consensus_visible, self.in_slices, self.in_3d = True, False, False
        self.blinded_text = ""
        self._check_again, self._next_wait = False, 0.0
        self._sources: dict[str, ReaderLabels] = {}
        self._edited_changed = False  # the edited copy changed since its last check: checked again at the next poll
        self._edited_observed: Callable[[], None] | None = None  # stops observing the edited copy

    # ---- opening ------------------------------------------------------------------------------------------

    def begin(self, client, project_id: int, protocol: Protocol, task: dict, case: dict) -> None:
        """A claimed review task: load its readers, consensus and map, then decide."""
        self.close()
        self.client, self.project_id, self.protocol, self.task, self.case = client, project_id, protocol, task, case
        self._load()

    def open_case(self, client, project_id: int, protocol: Protocol, case_id: int) -> None:
        """Look at a case without a review task (a reader after approval, a coordinator): read only."""
        self.close()
        self.client, self.project_id, self.protocol = client, project_id, protocol
        self.case = {"id": case_id, "name": f"case {case_id}"}
        self.stage = WAITING
        self._next_wait = 0.0
        self.refresh()

    def _load(self) -> None:
        self.stage = LOADING
        client, project_id, case_id, cache = self.client, self.project_id, self.case["id"], self.cache
        folder = self.work_dir / f"case-{case_id}"

        def work(progress, cancel):
            case = client.case(project_id, case_id)
            try:
                consensus = client.consensus(project_id, case_id)
            except NotFound as error:
                if error.code != "consensus_not_found" or case["state"] == "annotating":
                    raise  # readers still working: the model waits
                consensus = None  # past annotating without one: a one-reader case
            listed = client.submissions(project_id, case_id)
            if consensus is None:
                submissions = _latest(listed)
                if len(submissions) != 1:  # the server computes one for two readers or more before review
                    raise QueueError(
                        f"case {case['name']} is {case['state']} with {len(submissions)} readers but no consensus:"
                        " ask an admin to queue it again"
                    )
            else:
                ids = set(consensus.get("submission_ids") or [])
                submissions = [s for s in listed if not ids or s["id"] in ids]
            image = client.fetch_case(
                project_id, case, cache, ai=False, progress=lambda f, m: progress(f / 4, m), cancel=cancel
            )
            files = {"image": image.image}
            for index, item in enumerate(submissions):
                progress(index / (len(submissions) + 2), f"reader {index + 1} of {len(submissions)}")
                target = folder / f"submission-{item['id']}.seg.nrrd"
                files[item["id"]] = client.download_submission(project_id, item["id"], target).path
            if consensus is None:  # the proposal is the one reader's segmentation; nothing disagrees
                files["consensus"], files["disagreement"] = files[submissions[0]["id"]], None
            else:
                for part in ("consensus", "disagreement"):
                    suffix = ".seg.nrrd" if part == "consensus" else ".nrrd"
                    target = folder / f"{part}{suffix}"
                    files[part] = client.download_consensus_part(project_id, case_id, part, target).path
            if case.get("final_sha256"):
                files["final"] = client.download_final(project_id, case_id, folder / "final.seg.nrrd").path
            return case, consensus, submissions, files

        self.background.start(LOAD_JOB, work, self._loaded, self._load_failed)
        self.refresh()

    def _load_failed(self, error) -> None:
        if isinstance(error, Blinded):
            self.stage, self.blinded_text = BLINDED, error.message
            self.tell("hidden until the case is approved: the readers' work is blind to each other")
        elif isinstance(error, NotFound) and error.code == "consensus_not_found":
            self.stage, self._next_wait = WAITING, self.clock() + self.poll_s
            self.tell(STILL_READING)
        else:
            self.stage = NO_REVIEW
            self.tell(f"review: {error_text(error)}", error=True)
        self.refresh()

    def _loaded(self, answer) -> None:
        case, consensus, submissions, files = answer
        self.case, self.consensus, self.submissions, self.files = case, consensus, submissions, files
        self.one_reader = submissions[0]["reader"] if consensus is None else None
        review = ReviewSession(self.context, self.protocol)
        review.imageNode = loadVolume(self.context, files["image"], name=case["name"])  # it leaves with the review
        applyWindow(review.imageNode, self.protocol)  # the readers' window, not the whole range of the scan
        for item in submissions:  # named as the view shows them: anonymous readers stay so in the scene too
            review.addReaderFile(files[item["id"]], name=self._label(item["reader"]))
        proposal = "Consensus" if consensus else f"Proposal ({self._label(self.one_reader)})"
        review.loadResult(files["consensus"], files["disagreement"], name=proposal)
        self.review = review
        if "final" in files:
            self.final_node = review.loadFinal(files["final"])
        if consensus:
            self.show_disagreement(slices=True, volume=True)
        else:  # no map to lay over it: the CT alone in the slice views
            showInSliceViews(self.context.scene, None, 0.0, review.imageNode)
        self.stage = READY
        if consensus:
            self.tell(f"case {case['name']}: {len(submissions)} reader(s), consensus round {consensus.get('round')}")
        else:
            self.tell(f"case {case['name']}: one reader, round {case.get('round')}: their segmentation is the proposal")
        self.check_final()
        self.emit("loaded")
        self.refresh()

    # ---- the state ----------------------------------------------------------------------------------------

    def _label(self, name: str) -> str:
        if not self.anonymous_readers:
            return name
        order = [s["reader"] for s in sorted(self.submissions, key=lambda s: s["id"])]
        return f"Reader {order.index(name) + 1}" if name in order else name

    def _anonymized(self, text: str) -> str:
        """The server's words with reader names as the view shows them (anonymous: "Reader 2")."""
        if self.anonymous_readers:
            for name in sorted({s["reader"] for s in self.submissions}, key=len, reverse=True):
                text = text.replace(name, self._label(name))
        return text

    def _build(self) -> ReviewState:
        readers = tuple(
            ReaderRow(
                self._label(s["reader"]),  # anonymous: the name never reaches the view
                self._label(s["reader"]),
                s["reader"] in self.visible,
                s["id"],
                (s.get("metadata") or {}).get("time_spent_s"),
                tuple(
                    f"{o.get('structure')} {o.get('rule', '')}: {o.get('reason', '')}" for o in s.get("overrides", [])
                ),
            )
            for s in self.submissions
        )
        loaded = self.consensus or self.one_reader
        rows = tuple(self._row(structure) for structure in (self.protocol.structures if loaded else ()))
        problems = tuple(
            f"{self.protocol.structure(sid).name}: {message} (no reason given)"
            for sid, found in self.failures.items()
            for rule, message in found
            if not self._reason(sid, rule)
        )
        busy = self.background.running(DECIDE_JOB) or self.background.running(LOAD_JOB)
        deciding = self.stage == READY and self.task is not None
        actions = {
            "approve": first_off(
                (not deciding, "no review task in hand"),
                (busy, "busy"),
                (self._checking(), "checking the final against the protocol"),
                (bool(problems), "; ".join(problems)),
            ),
            "return": first_off((not deciding, "no review task in hand"), (busy, "busy")),
            "edit": first_off(
                (not deciding, "no review task in hand"),
            ),
            "show_consensus": first_off(
                (self.review is None or self.review.consensusNode is None, "no consensus loaded"),
            ),
            "show_disagreement": first_off(
                (self.one_reader is not None, "one reader: no disagreement map"),
                (self.review is None or self.review.disagreementNode is None, "no disagreement map"),
            ),
        }
        return ReviewState(
            self.stage,
            self.case["id"] if self.case else None,
            self.case.get("name", "") if self.case else "",
            (self.case or {}).get("round") if self.one_reader else (self.consensus or {}).get("round"),
            readers,
            rows,
            self.consensus_visible,
            self.in_slices,
            self.in_3d,
            problems,
            self._checking(),
            self.blinded_text,
            self.message,
            self.message_is_error,
            actions,
            self._label(self.one_reader) if self.one_reader else None,
        )

    def _row(self, structure) -> AgreementRow:
        if self.one_reader:
            agreement = {"verdict": ONE_READER, "reason": "nothing to compare: their segmentation is the proposal"}
        else:
            found = (self.consensus.get("agreement", {}).get("structures") or {}).values()
            agreement = next((item for item in found if item.get("structure_id") == structure.id), {})
        pairs = agreement.get("pairwise") or []
        kind, reader = self.decisions.get(structure.id, (CONSENSUS, None))
        proposal = f"the proposal ({self._label(self.one_reader)})" if self.one_reader else "the consensus"
        text = {CONSENSUS: proposal, EDITED: "your edit"}.get(kind) or self._label(reader)
        failures = tuple(message for _rule, message in self.failures.get(structure.id, []))
        reasons = [self._reason(structure.id, rule) for rule, _ in self.failures.get(structure.id, [])]
        return AgreementRow(
            structure.id,
            structure.name,
            structure.color,
            agreement.get("verdict", "not computed"),
            self._anonymized(agreement.get("reason", "")),
            _mean(p.get("dice") for p in pairs),
            _mean(p.get("hd95_mm") for p in pairs),
            kind,
            self._label(reader) if reader else None,
            text,
            failures,
            next((r for r in reasons if r), None),
        )

    def _reason(self, structure_id: str, rule: str | None) -> str | None:
        return self.overrides.get((structure_id, rule)) or self.overrides.get((structure_id, None))

    # ---- looking --------------------------------------------------------------------------------------------

    def _reader(self, shown: str) -> str | None:
        """A reader's name from what the view shows (the name, or the label when anonymous)."""
        names = {self._label(s["reader"]): s["reader"] for s in self.submissions}
        if not self.anonymous_readers:
            names |= {s["reader"]: s["reader"] for s in self.submissions}
        return names.get(shown)

    def show_reader(self, shown: str, visible: bool = True) -> bool:
        name = self._reader(shown)
        if self.review is None or name is None or self._label(name) not in self.review.readerNames:
            return self._told(f"show: {shown!r} is not a reader of this case")
        self.review.setReaderVisible(self._label(name), visible)
        (self.visible.add if visible else self.visible.discard)(name)
        self.refresh()
        return True

    def show_consensus(self, visible: bool = True) -> bool:
        """The consensus in the views (with one reader: the proposal, their segmentation)."""
        if self.review is None or self.review.consensusNode is None:
            return self._told("show: no consensus loaded")
        self.review.consensusNode.GetDisplayNode().SetVisibility(bool(visible))
        self.consensus_visible = bool(visible)
        self.refresh()
        return True

    def show_disagreement(self, slices: bool = True, volume: bool = True) -> bool:
        """The disagreement map over the CT in the slice views and as a volume rendering (CT in context)."""
        review = self.review
        if review is None or review.disagreementNode is None:
            return self._told("show: no disagreement map loaded")
        showInSliceViews(self.context.scene, review.disagreementNode if slices else None, 0.5, review.imageNode)
        self.in_slices = bool(slices)
        try:
            setupVolumeRendering(self.context, review.disagreementNode, visible=volume)
            if review.imageNode is not None:  # the CT in context, with the protocol's preset
                preset = self.protocol.volume_rendering or CT_CONTEXT_PRESET
                setupVolumeRendering(self.context, review.imageNode, preset=preset, visible=volume)
            self.in_3d = bool(volume)
        except (RuntimeError, ValueError) as error:  # no volume rendering here: the slices still show it
            self.tell(f"volume rendering: {error}", error=True)
        self.refresh()
        return True

    # ---- deciding ----------------------------------------------------------------------------------------------

    def take_consensus(self, structure_id: str) -> bool:
        return self._decide(structure_id, CONSENSUS, None)

    def take_reader(self, structure_id: str, reader: str) -> bool:
        """The final takes ``reader``'s mask of this structure (the reader's name, or its shown label)."""
        name = self._reader(reader)
        if name is None:
            shown = ", ".join(self._label(s["reader"]) for s in self.submissions)
            return self._told(f"take: {reader!r} is not a reader of this case ({shown})")
        return self._decide(structure_id, READER, name)

    def edit(self, structure_id: str) -> bool:
        """Edit this structure for the final, starting from the consensus (event ``selected``: the Segment
        Editor selects the segment of the edited copy)."""
        if not self._decide(structure_id, EDITED, None):
            return False
        node = self.review.editedCopy()
        from ..mrml.protocol_segments import structureSegments

        if self._edited_observed is None:
            self._edited_observed = self.review.onEdited(self._edits_made)
        self.emit(
            "selected",
            segmentation_node_id=node.GetID(),
            segment_id=structureSegments(node, self.protocol).get(structure_id),
        )
        return True

    def _edits_made(self) -> None:  # a stroke on the edited copy: checked at the next poll, Approve waits for it
        self._edited_changed = True

    def _checking(self) -> bool:
        return self.background.running(CHECK_JOB) or self._edited_changed

    def _forget_edits(self) -> None:
        if self._edited_observed is not None:
            self._edited_observed()  # stop observing the edited copy
        self._edited_observed, self._edited_changed = None, False

    def _decide(self, structure_id: str, kind: str, reader: str | None) -> bool:
        if self.stage != READY or self.task is None:
            return self._told("decide: no review task in hand")
        if structure_id not in {s.id for s in self.protocol.structures}:
            return self._told(f"decide: '{structure_id}' is not a structure of {self.protocol.label}")
        self.decisions[structure_id] = (kind, reader)
        self.check_final()
        self.refresh()
        return True

    def override(self, structure_id: str, rule: str | None, reason: str) -> bool:
        """Approve a final that fails ``rule`` of this structure (None: any) for ``reason`` (sent, audited)."""
        if not isinstance(reason, str) or not reason.strip():
            return self._told(f"override of {structure_id}: a reason is required")
        self.overrides[(structure_id, rule)] = reason.strip()
        self.refresh()
        return True

    def decision(self) -> dict:
        """The decision JSON the server takes (docs/queue-api.md "Review and consensus")."""
        structures = {}
        for structure_id, (kind, reader) in self.decisions.items():
            if kind == READER:
                structures[structure_id] = {"action": "take_reader", "reader": reader}
            elif kind == EDITED:
                structures[structure_id] = {"action": "edited"}
        overrides = [
            {"structure": s, **({"rule": r} if r else {}), "reason": reason}
            for (s, r), reason in self.overrides.items()
        ]
        return {"decision": "approve", "structures": structures, "overrides": overrides}

    def _edited_file(self) -> Path | None:
        if not any(kind == EDITED for kind, _ in self.decisions.values()):
            return None
        return saveSegmentation(self.review.editedCopy(), self.work_dir / f"case-{self.case['id']}" / "edited.seg.nrrd")

    def check_final(self) -> None:
        """Run the protocol's rules on the final the decisions make (as the server composes it), in a job: after
        each decision, and when the reviewer stops editing (the view calls it; Approve is checked again by the
        server, whose refusal lists the failures the same way)."""
        if self.stage != READY or self.task is None:
            return
        if self.background.running(CHECK_JOB):
            self._check_again = True
            return
        protocol, decisions, sources = self.protocol, dict(self.decisions), self._sources
        paths = {CONSENSUS: self.files["consensus"], EDITED: self._edited_file()}
        paths |= {s["reader"]: self.files[s["id"]] for s in self.submissions}

        def work(progress, cancel):
            def source(key):
                if key not in sources or key == EDITED:
                    sources[key] = read_reader(paths[key], protocol, name=key)
                return sources[key]

            chosen = {}
            for structure in protocol.structures:
                kind, reader = decisions.get(structure.id, (CONSENSUS, None))
                chosen[structure.id] = source(reader if kind == READER else kind)
            first = next(iter(chosen.values()))
            labels = np.zeros(first.layers[0].shape, np.uint16)
            values = {}
            for value, structure in enumerate(protocol.structures, start=1):
                if structure.id in chosen[structure.id].segments:
                    labels[chosen[structure.id].mask(structure.id)] = value
                    values[structure.id] = (0, value)
            checked = check_reader(protocol, ReaderLabels("final", None, first.geometry, [labels], values))
            return {s.structure_id: [(r.rule, r.message) for r in s.blocking] for s in checked.structures if s.blocking}

        def done(failures) -> None:
            self.failures = failures
            if self._check_again:
                self._check_again = False
                self.check_final()
            self.refresh()

        self.background.start(CHECK_JOB, work, done, lambda e: self._told(f"checking the final: {error_text(e)}"))

    def approve(self) -> bool:
        """Approve the case with the decisions (an edited final is uploaded first)."""
        action = self._build().actions["approve"]
        if not action.enabled:
            return self._told(f"approve: {action.reason}")
        body = self.decision()
        edited = self._edited_file()
        client, pid, task = self.client, self.project_id, self.task

        def work(progress, cancel):
            if edited is not None:
                client.upload_edited(pid, task["id"], task["lease_id"], edited)
            return client.review(
                pid,
                task["id"],
                task["lease_id"],
                "approve",
                structures=body["structures"],
                overrides=body["overrides"] or None,
            )

        self.background.start(DECIDE_JOB, work, lambda answer: self._decided("approve", answer), self._refused)
        self.tell("approving")
        self.refresh()
        return True

    def return_to_readers(self, comments: dict[str, str]) -> bool:
        """Send the case back: ``{reader: comment}`` (names or shown labels); their tasks reopen for them."""
        action = self._build().actions["return"]
        if not action.enabled:
            return self._told(f"return: {action.reason}")
        unknown = [r for r in comments if self._reader(r) is None]
        if unknown or not comments:
            shown = ", ".join(self._label(s["reader"]) for s in self.submissions)
            return self._told(f"return: choose readers of this case ({shown})")
        if any(not isinstance(c, str) or not c.strip() for c in comments.values()):
            return self._told("return: each reader needs a comment saying what to change")
        returns = [{"reader": self._reader(r), "comment": c.strip()} for r, c in comments.items()]
        client, pid, task = self.client, self.project_id, self.task

        def work(progress, cancel):
            return client.review(pid, task["id"], task["lease_id"], "return", returns=returns)

        self.background.start(DECIDE_JOB, work, lambda answer: self._decided("return", answer), self._refused)
        self.refresh()
        return True

    def _decided(self, decision: str, answer: dict) -> None:
        self.stage = DECIDED
        returned = ", ".join(self._label(name) for name in answer.get("returned_to", []))
        words = "approved" if decision == "approve" else f"returned to {returned}"
        self.tell(f"case {self.case['name']}: {words}")
        self.emit("decided", decision=decision, answer=answer)
        self.refresh()

    def _refused(self, error) -> None:
        if isinstance(error, ProtocolRejected):
            found: dict[str, list[tuple[str, str]]] = {}
            for failure in error.failures:
                found.setdefault(failure.structure, []).append((failure.rule, failure.message))
            self.failures = found
            listed = "; ".join(failure.message for failure in error.failures)
            self.tell(f"the server refused the final: {listed}: give a reason for each, or decide otherwise", True)
        else:
            self.tell(f"review: {error_text(error)}", error=True)
        self.refresh()

    # ---- the pump -------------------------------------------------------------------------------------------

    def poll(self) -> bool:
        """Hand finished jobs over, ask whether a waited-for consensus is done, announce changes."""
        self.background.poll()
        if self._edited_changed and not self.background.running(CHECK_JOB):
            self._edited_changed = False
            self.check_final()
        if self.stage == WAITING and not self.background.running(WAIT_JOB) and self.clock() >= self._next_wait:
            client, pid, case_id = self.client, self.project_id, self.case["id"]
            self._next_wait = self.clock() + self.poll_s

            def ready(case) -> None:
                self.case = case
                if self.stage != WAITING:
                    return
                if case["state"] == "annotating":
                    self.tell(STILL_READING)
                else:  # in review or approved: a consensus, or with one reader their segmentation
                    self._load()

            self.background.start(
                WAIT_JOB, lambda progress, cancel: client.case(pid, case_id), ready, self._load_failed
            )
        return self.refresh()

    def close(self) -> None:
        """Leave the case: its nodes leave the scene (event ``closed``)."""
        was_open = self.review is not None
        self._forget_edits()
        if was_open:
            showInSliceViews(self.context.scene, None, 0.0)
            self.review.close()
        self._reset()
        if was_open:
            self.emit("closed")
        self.refresh()
