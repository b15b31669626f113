"""The protocol panel's model: one row per structure of the open case (colour, name, required, state, AI
badge, instructions, live rule results), the reader's decisions per row, and the Submit gate: off until the
protocol is met or each blocking failure has an override reason (and the required questions are answered).

Bound to a ``TaskSession`` (``bind``). Edits seen by the session (the Segment Editor's strokes) make the
rules run again ``recheck_after_s`` after the last one, in ``poll()``, on the caller's thread: they read the
masks from the scene. The case image can be shown in 3-D with the protocol's volume rendering preset.
Events besides ``changed``: ``selected`` (``structure_id``, ``segment_id``: the view selects that segment in
the Segment Editor).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ..mrml.rendering import setupVolumeRendering
from ..mrml.scene import nodeIds, removeNodes
from ..mrml.task_session import ABSENT, ACCEPTED, DONE, REFINED, REJECTED, SUGGESTED, TaskSession, TaskSessionError
from ..mrml.task_states import SessionCheck
from .events import Action, Model, first_off, off, on

DEFAULT_PRESETS = {"CT": "CT-Soft-Tissue", "MR": "MR-Default"}  # when the protocol names no preset


@dataclass(frozen=True)
class RuleRow:
    rule: str
    passed: bool | None  # None: could not be evaluated
    blocks: bool  # fails with severity error: Submit needs an override reason
    text: str
    expected: str = ""
    override: str | None = None  # the reader's reason, when given


@dataclass(frozen=True)
class StructureRow:
    structure_id: str
    name: str
    color: str  # "#rrggbb"
    required: bool
    state: str  # empty, suggested, accepted, rejected, refined, done, absent
    ai: str | None  # the AI badge ("AI: ct 1.0, 93 %"), None without a proposal
    instructions: str
    rules: tuple[RuleRow, ...]
    selected: bool
    voxels: int
    volume_ml: float
    active_s: int
    actions: Mapping[str, Action] = field(default_factory=dict)

    @property
    def blocking(self) -> tuple[RuleRow, ...]:
        return tuple(r for r in self.rules if r.blocks and not r.override)


@dataclass(frozen=True)
class ProtocolState:
    protocol: str | None  # id@version
    title: str
    rows: tuple[StructureRow, ...]
    selected: str | None
    gate: Action  # whether the protocol lets the case be submitted, and why not
    problems: tuple[str, ...]  # what stands between the case and Submit, in words
    checking: bool  # an edit is waiting for the rules to run again
    message: str
    message_is_error: bool
    preset: str = ""  # the volume rendering preset of the case image (the protocol's)
    in_3d: bool = False  # the case image is volume-rendered with it
    actions: Mapping[str, Action] = field(default_factory=dict)

    def row(self, structure_id: str) -> StructureRow:
        return next(r for r in self.rows if r.structure_id == structure_id)


ROW_ACTIONS = ("accept", "reject", "revert", "done", "absent", "override")


class ProtocolModel(Model):
    def __init__(self, clock: Callable[[], float] = time.monotonic, recheck_after_s: float = 0.5):
        super().__init__()
        self.clock, self.recheck_after_s = clock, recheck_after_s
        self.session: TaskSession | None = None
        self.check: SessionCheck | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._due: float | None = None
        self.in_3d = False
        self._rendering_nodes: set[str] = set()  # made for the 3-D view: they leave with the case

    def bind(self, session: TaskSession | None) -> None:
        """Follow ``session`` (None: no case open). The rules run at once."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self.session is not None and self._rendering_nodes:
            removeNodes(self.session.context.scene, sorted(self._rendering_nodes))
        self._rendering_nodes, self.in_3d = set(), False
        self.session, self.check, self._due = session, None, None
        if session is not None:
            self._unsubscribe = session.subscribe(self._on_session)
            self.check_now()
        self.tell("")
        self.refresh()

    def _on_session(self, event: str, key) -> None:
        if event == "closed":
            self.bind(None)
        elif event in ("state", "override"):
            self._due = self.clock() + self.recheck_after_s  # strokes come in bursts: check after the last
        if event != "check":
            self.refresh()

    # ---- the state ---------------------------------------------------------------------------------

    def _build(self) -> ProtocolState:
        session = self.session
        if session is None:
            none = off("no case is open")
            return ProtocolState(
                None,
                "",
                (),
                None,
                none,
                (),
                False,
                self.message,
                self.message_is_error,
                "",
                False,
                {"volume_rendering": none},
            )
        rows = tuple(self._row(state) for state in session.structures)
        problems = tuple(self._problems())
        gate = off("; ".join(problems)) if problems else on()
        protocol = session.protocol
        return ProtocolState(
            protocol.label,
            protocol.title,
            rows,
            session.selected,
            gate,
            problems,
            self._due is not None,
            self.message,
            self.message_is_error,
            self.preset(),
            self.in_3d,
            {"volume_rendering": on()},
        )

    def preset(self) -> str:
        """The volume rendering preset of the open case: the protocol's, else a default for its modality."""
        if self.session is None:
            return ""
        protocol = self.session.protocol
        return protocol.volume_rendering or DEFAULT_PRESETS.get(protocol.modality, DEFAULT_PRESETS["CT"])

    def _reason(self, structure_id: str, rule: str) -> str | None:
        given = {(o["structure"], o.get("rule")): o["reason"] for o in self.session.overrides}
        return given.get((structure_id, rule)) or given.get((structure_id, None))

    def _row(self, state) -> StructureRow:
        structure = self.session.protocol.structure(state.structure_id)
        checked = None
        if self.check is not None:
            checked = next((s for s in self.check.protocol.structures if s.structure_id == structure.id), None)
        rules = ()
        if checked is not None:
            rules = tuple(
                RuleRow(
                    r.rule,
                    r.passed,
                    r.blocks,
                    r.message,
                    r.expected,
                    self._reason(structure.id, r.rule) if r.blocks else None,
                )
                for r in checked.results
            )
        badge = None
        if state.ai is not None:
            confidence = state.ai.get("confidence")
            badge = f"AI: {state.ai.get('engine') or '?'} {state.ai.get('version') or ''}".rstrip()
            badge += f", {float(confidence):.0%}" if isinstance(confidence, int | float) else ""
        times = self.session.times()
        return StructureRow(
            structure.id,
            structure.name,
            structure.color,
            structure.required,
            state.state,
            badge,
            structure.instructions,
            rules,
            self.session.selected == structure.id,
            checked.voxels if checked else 0,
            round(checked.volume_ml, 2) if checked else 0.0,
            int(times.structure_s(structure.id)),
            self._row_actions(state, structure)
            | {"override": first_off((not any(r.blocks and not r.override for r in rules), "no rule blocks it"))},
        )

    @staticmethod
    def _row_actions(state, structure) -> dict[str, Action]:
        ai = state.ai is not None
        return {
            "accept": first_off(
                (not ai, "no AI proposal"),
                (state.edit == ACCEPTED, "accepted"),
                (state.edit == REFINED, "edited after the AI's proposal: revert first"),
            ),
            "reject": first_off((not ai, "no AI proposal"), (state.edit == REJECTED, "rejected")),
            "revert": first_off((not ai, "no AI proposal"), (state.edit == SUGGESTED, "the AI's proposal is shown")),
            "done": first_off((state.state == DONE, "done"), (state.state == ABSENT, "declared absent")),
            "absent": first_off((structure.required, "required"), (state.state == ABSENT, "declared absent")),
        }

    def _problems(self) -> list[str]:
        found = []
        if self.check is not None:
            found += [
                f"{f.message} (no override reason)"
                for f in self.check.failures
                if not self._reason(f.structure, f.rule)
            ]
            found += [f"segment '{s}' is not a structure of the protocol" for s in self.check.extra_segments]
        found += [f"question '{q}' is not answered" for q in self.session.unanswered()]
        return found

    def gate(self) -> Action:
        """The Submit gate of the protocol and its questions (the task model asks it)."""
        return self.state.gate

    # ---- actions -----------------------------------------------------------------------------------------

    def _do(self, what: str, call: Callable[[], object]) -> bool:
        if self.session is None:
            self.tell(f"{what}: no case is open", error=True)
            self.refresh()
            return False
        try:
            call()
        except TaskSessionError as error:
            self.tell(f"{what}: {error}", error=True)
            self.refresh()
            return False
        self.tell("")
        self.refresh()
        return True

    def _target(self, structure_id: str | None) -> str | None:
        return structure_id or (self.session.selected if self.session else None)

    def select(self, structure_id: str | None) -> bool:
        """Select a row: its segment becomes the Segment Editor's (event ``selected``) and takes the active time."""
        if not self._do("select", lambda: self.session.select(structure_id)):
            return False
        segment = None
        if structure_id is not None:
            try:
                segment = self.session.segmentId(structure_id)
            except TaskSessionError:
                segment = None  # a structure drawn elsewhere than in a segment (a point, a line)
        self.emit("selected", structure_id=structure_id, segment_id=segment)
        return True

    def select_segment(self, segment_id: str | None) -> bool:
        """The Segment Editor selected a segment: its structure becomes the selected row (time goes to it). A
        segment of no structure, or the one already selected, changes nothing."""
        if self.session is None or not segment_id:
            return False
        for structure in self.session.protocol.structures:
            try:
                found = self.session.segmentId(structure.id)
            except TaskSessionError:
                continue  # a structure without a segment
            if found == segment_id:
                return structure.id != self.session.selected and self.select(structure.id)
        return False

    def _step(self, offset: int) -> bool:
        if self.session is None:
            return self._do("select", lambda: None)
        ids = [s.id for s in self.session.protocol.structures if s.kind == "segment"]
        here = ids.index(self.session.selected) if self.session.selected in ids else (-1 if offset > 0 else 0)
        return self.select(ids[(here + offset) % len(ids)])

    def next_structure(self) -> bool:
        return self._step(1)

    def previous_structure(self) -> bool:
        return self._step(-1)

    def _refused(self, text: str) -> bool:
        self.tell(text, error=True)
        self.refresh()
        return False

    def _row_action(self, action: str, structure_id: str | None, call) -> bool:
        target = self._target(structure_id)
        if self.session is None or target is None:
            return self._refused(f"{action}: " + ("no case is open" if self.session is None else "select a structure"))
        row = next((r for r in self.state.rows if r.structure_id == target), None)
        allowed = row.actions.get(action) if row else None
        if allowed is not None and not allowed.enabled:
            return self._refused(f"{action}: {row.name}: {allowed.reason}")
        return self._do(action, lambda: call(target))

    def accept(self, structure_id: str | None = None) -> bool:
        """Keep the AI's proposal (the selected row's without an id)."""
        return self._row_action("accept", structure_id, lambda s: self.session.accept(s))

    def reject(self, structure_id: str | None = None) -> bool:
        return self._row_action("reject", structure_id, lambda s: self.session.reject(s))

    def revert(self, structure_id: str | None = None) -> bool:
        return self._row_action("revert", structure_id, lambda s: self.session.revert(s))

    def mark_done(self, structure_id: str | None = None, done: bool = True) -> bool:
        return self._do("done", lambda: self.session.markDone(self._target(structure_id), done))

    def declare_absent(self, structure_id: str | None = None, absent: bool = True) -> bool:
        return self._do("absent", lambda: self.session.declareAbsent(self._target(structure_id), absent))

    def override(self, structure_id: str, rule: str | None, reason: str) -> bool:
        """Keep a structure that fails ``rule`` (None: any of its rules) for ``reason`` (sent with the case)."""
        return self._do("override", lambda: self.session.override(structure_id, rule, reason))

    def clear_override(self, structure_id: str, rule: str | None = None) -> bool:
        return self._do("override", lambda: self.session.clearOverride(structure_id, rule))

    def show_volume_rendering(self, visible: bool = True) -> bool:
        """The case image in the 3-D view with the protocol's volume rendering preset (or hidden)."""
        if self.session is None:
            return self._refused("3-D: no case is open")
        session, preset = self.session, self.preset()
        before = nodeIds(session.context.scene)
        try:
            setupVolumeRendering(session.context, session.volumeNode, preset=preset, visible=visible)
        except (RuntimeError, ValueError) as error:  # no volume rendering here, or a preset Slicer lacks
            return self._refused(f"3-D: {error}")
        finally:
            self._rendering_nodes |= nodeIds(session.context.scene) - before
        self.in_3d = bool(visible)
        self.tell("")
        self.refresh()
        return True

    def check_now(self) -> None:
        """Run the protocol's rules on the scene now (what ``poll`` does after edits)."""
        if self.session is not None and not self.session.closed:
            self.check = self.session.check()
        self._due = None
        self.refresh()

    def poll(self) -> bool:
        if self._due is not None and self.clock() >= self._due:
            self.check_now()
            return True
        return self.refresh()
