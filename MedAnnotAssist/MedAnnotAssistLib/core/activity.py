"""Active time of a reader on a case and on each of its structures, idle time excluded.

Pure Python, so Slicer's task session and the browser annotator count time the same way. The rule:
every activity (a click, a stroke, a key, selecting a structure) makes the following ``idle_after_s``
seconds count as active; time beyond that until the next activity is idle and not counted. Active
time goes to the structure in focus (the one selected or last edited), or to no structure
(``unassigned_s``) when none is. While paused nothing counts. The clock is any callable returning
seconds (``time.monotonic`` by default; ``ManualClock`` in tests).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

DEFAULT_IDLE_AFTER_S = 60.0


class ManualClock:
    """A clock that moves only when told: for tests and replays."""

    def __init__(self, start: float = 0.0):
        self.now = float(start)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError(f"seconds: a clock only moves forward, got {seconds}")
        self.now += float(seconds)
        return self.now


@dataclass(frozen=True)
class ActiveTimes:
    """Seconds counted so far: the case's active time, split by structure and the rest."""

    case_s: float = 0.0
    structures: dict[str, float] = field(default_factory=dict)
    unassigned_s: float = 0.0  # active with no structure in focus
    idle_s: float = 0.0  # excluded: longer than idle_after_s without activity
    paused_s: float = 0.0  # excluded: paused

    def structure_s(self, structure_id: str) -> float:
        return self.structures.get(structure_id, 0.0)

    def to_json(self, digits: int = 3) -> dict:
        return {
            "case_s": round(self.case_s, digits),
            "structures": {key: round(value, digits) for key, value in self.structures.items()},
            "unassigned_s": round(self.unassigned_s, digits),
            "idle_s": round(self.idle_s, digits),
            "paused_s": round(self.paused_s, digits),
        }

    @classmethod
    def from_json(cls, data: Mapping | None, where: str = "times") -> ActiveTimes:
        """Times saved by ``to_json`` (a resumed case continues from them); errors name the field."""
        if not data:
            return cls()
        if not isinstance(data, Mapping):
            raise ValueError(f"{where}: expected an object, got {type(data).__name__}")

        def seconds(value, path: str) -> float:
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{path}: expected seconds >= 0, got {value!r}")
            return float(value)

        structures = data.get("structures") or {}
        if not isinstance(structures, Mapping):
            raise ValueError(f"{where}.structures: expected an object of seconds by structure id")
        return cls(
            seconds(data.get("case_s", 0.0), f"{where}.case_s"),
            {str(k): seconds(v, f"{where}.structures.{k}") for k, v in structures.items()},
            seconds(data.get("unassigned_s", 0.0), f"{where}.unassigned_s"),
            seconds(data.get("idle_s", 0.0), f"{where}.idle_s"),
            seconds(data.get("paused_s", 0.0), f"{where}.paused_s"),
        )


class ActivityClock:
    """Counts active time from activity events (see the module docstring for the rule).

    ``carried`` holds the times of earlier sittings of the same case (a resumed case adds to them).
    """

    def __init__(
        self,
        idle_after_s: float = DEFAULT_IDLE_AFTER_S,
        clock: Callable[[], float] = time.monotonic,
        carried: ActiveTimes | None = None,
    ):
        if not idle_after_s > 0:
            raise ValueError(f"idle_after_s: expected seconds > 0, got {idle_after_s!r}")
        self.idle_after_s = float(idle_after_s)
        self._clock = clock
        start = clock()
        self._last_activity = start  # opening the case is activity
        self._counted_until = start
        self._focus: str | None = None
        self._paused = False
        carried = carried or ActiveTimes()
        self._case = carried.case_s
        self._structures = dict(carried.structures)
        self._unassigned = carried.unassigned_s
        self._idle = carried.idle_s
        self._paused_s = carried.paused_s

    @property
    def focus(self) -> str | None:
        """The structure active time goes to, or None."""
        return self._focus

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def idle(self) -> bool:
        """True once ``idle_after_s`` passed without activity (time is not being counted)."""
        return not self._paused and self._clock() - self._last_activity > self.idle_after_s

    def _pending(self, now: float) -> tuple[float, float]:
        """(active, idle) seconds between the last settlement and ``now``."""
        elapsed = max(0.0, now - self._counted_until)
        if self._paused:
            return 0.0, 0.0
        active = max(0.0, min(now, self._last_activity + self.idle_after_s) - self._counted_until)
        active = min(active, elapsed)
        return active, elapsed - active

    def _settle(self) -> float:
        now = self._clock()
        active, idle = self._pending(now)
        if self._paused:
            self._paused_s += max(0.0, now - self._counted_until)
        self._add(active)
        self._idle += idle
        self._counted_until = max(self._counted_until, now)
        return now

    def _add(self, active: float) -> None:
        self._case += active
        if self._focus is None:
            self._unassigned += active
        else:
            self._structures[self._focus] = self._structures.get(self._focus, 0.0) + active

    def activity(self, structure_id: str | None = None) -> None:
        """The reader did something; with ``structure_id`` it concerns that structure (it takes the focus).
        Ignored while paused: resuming is explicit."""
        now = self._settle()
        if self._paused:
            return
        if structure_id is not None:
            self._focus = structure_id
        self._last_activity = now

    def select(self, structure_id: str | None) -> None:
        """The reader selected a structure (None: no structure); it counts as activity unless paused."""
        now = self._settle()
        self._focus = structure_id
        if not self._paused:
            self._last_activity = now

    def pause(self) -> None:
        if not self._paused:
            self._settle()
            self._paused = True

    def resume(self) -> None:
        """Count again from now (resuming is activity)."""
        if self._paused:
            now = self._settle()
            self._paused = False
            self._last_activity = now

    def times(self) -> ActiveTimes:
        """The times up to now, without changing anything (safe to poll for a display)."""
        now = self._clock()
        active, idle = self._pending(now)
        structures = dict(self._structures)
        unassigned = self._unassigned
        if self._focus is None:
            unassigned += active
        else:
            structures[self._focus] = structures.get(self._focus, 0.0) + active
        paused = self._paused_s + (max(0.0, now - self._counted_until) if self._paused else 0.0)
        return ActiveTimes(self._case + active, structures, unassigned, self._idle + idle, paused)
