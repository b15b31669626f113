"""The states of a task session's structures and of its protocol gate (see ``task_session``).

- ``empty``: nothing drawn, no AI proposal;
- ``suggested``: holds the AI's proposal, not reviewed yet;
- ``accepted``: the AI's proposal kept as it is;
- ``rejected``: the AI's proposal removed;
- ``refined``: holds the reader's drawing (an edited proposal, or drawn from scratch);
- ``done``: the reader marked it finished (the state before stays in ``StructureState.edit``);
- ``absent``: an optional structure declared not present in this image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from ..core import provenance as prov
from ..core.protocol_check import ProtocolCheck
from .task_loading import TaskSessionError

EMPTY, SUGGESTED, ACCEPTED, REJECTED, REFINED = "empty", "suggested", "accepted", "rejected", "refined"
DONE, ABSENT = "done", "absent"
EDIT_STATES = (EMPTY, SUGGESTED, ACCEPTED, REJECTED, REFINED)
STATE_NAMES = (*EDIT_STATES, DONE, ABSENT)
CLIENT = "MedAnnotAssist task session"
AI_STATES = {SUGGESTED: prov.SUGGESTED, ACCEPTED: prov.ACCEPTED, REJECTED: prov.REJECTED, REFINED: prov.REFINED}


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class StructureState:
    """One protocol structure in the session (read it; change it through the session's actions)."""

    structure_id: str
    name: str
    required: bool
    edit: str = EMPTY  # one of EDIT_STATES
    done: bool = False
    absent: bool = False
    ai: dict | None = None  # provenance of the AI proposal in place (engine, version, parameters, ...)
    history: list[dict] = field(default_factory=list)  # the first version is the AI's proposal, when there is one

    @property
    def state(self) -> str:
        return ABSENT if self.absent else DONE if self.done else self.edit


@dataclass(frozen=True)
class Failure:
    """A blocking rule that fails, as the server reports it; ``reason`` is the reader's override, if any."""

    structure: str
    name: str
    rule: str
    measured: float | None
    expected: str
    message: str
    reason: str | None = None

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None or k == "measured"}


@dataclass
class SessionCheck:
    """The protocol gate: rules on the segments' content, overrides, required questions, stray segments."""

    protocol: ProtocolCheck
    failures: list[Failure]
    unanswered: list[str]  # ids of required questions without an answer
    extra_segments: list[str]  # segment names that are no protocol structure (the server refuses them)

    @property
    def blocking(self) -> list[Failure]:
        return [f for f in self.failures if f.reason is None]

    @property
    def ready(self) -> bool:
        return not self.blocking and not self.unanswered and not self.extra_segments

    def messages(self) -> list[str]:
        """What stands between the case and its submission, in words."""
        found = [f"{f.message} (no override reason)" for f in self.blocking]
        found += [f"question '{q}' is not answered" for q in self.unanswered]
        found += [f"segment '{s}' is not a structure of {self.protocol.protocol}" for s in self.extra_segments]
        return found


class NotReadyError(TaskSessionError):
    """``pack`` refused: the gate is not met (``check`` holds the details)."""

    def __init__(self, check: SessionCheck):
        self.check = check
        super().__init__(f"the case cannot be submitted yet: {'; '.join(check.messages())}")
