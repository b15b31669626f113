"""The AI panel's model: the engines of the registry (usable here or what they need), the protocol
structures the chosen one can propose, Run with progress and Cancel. The engine runs in a ``Background`` job,
never on the caller's thread; its result reaches the scene in ``poll()`` (``TaskSession.applyEngineResult``).
Structures the reader already worked on are replaced only after ``run(confirmed=True)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..core.engines import get_engine, list_engines
from ..core.jobs import CancelledError
from ..mrml.task_session import ACCEPTED, DONE, EMPTY, REFINED, TaskSession
from .background import Background
from .events import Action, Model, first_off
from .task_state import Progress

ENGINE_JOB, ENGINES_JOB, INFO_JOB = "engine", "engines", "engine info"


@dataclass(frozen=True)
class EngineRow:
    name: str
    usable: bool
    detail: str  # its version, or what to install or start


@dataclass(frozen=True)
class TargetRow:
    """A protocol structure the chosen engine can propose."""

    structure_id: str
    name: str
    engine_structures: tuple[str, ...]
    chosen: bool
    reader_work: bool  # the reader drew, edited or accepted it: a run replaces that


@dataclass(frozen=True)
class AIState:
    engines: tuple[EngineRow, ...]
    engine: str | None
    targets: tuple[TargetRow, ...]
    progress: Progress | None  # while it runs
    confirm: str  # non-empty: what Run would replace; run(confirmed=True) goes ahead
    last_run: str  # what the last run proposed
    message: str
    message_is_error: bool
    actions: Mapping[str, Action]


class AIModel(Model):
    """``engine_options``: keyword arguments per engine name (a model file, a server URL)."""

    def __init__(self, background: Background, engine_options: Mapping[str, dict] | None = None):
        super().__init__()
        self.background = background
        self.engine_options = {k: dict(v) for k, v in (engine_options or {}).items()}
        self.session: TaskSession | None = None
        self.engines: list[dict] = []
        self.engine_name: str | None = None
        self.engine = None
        self.info = None
        self.chosen: set[str] = set()
        self.confirm = ""
        self.last_run = ""
        self._unsubscribe: Callable[[], None] | None = None

    def bind(self, session: TaskSession | None) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self.background.running(ENGINE_JOB):
            self.background.cancel(ENGINE_JOB)  # its result belongs to the case that closed
        self.session, self.confirm, self.last_run = session, "", ""
        if session is not None:
            self._unsubscribe = session.subscribe(self._on_session)
            self.chosen = set(self._targets())
        self.refresh()

    def _on_session(self, event: str, key) -> None:
        if event == "closed":
            self.bind(None)
        elif event == "state":
            self.refresh()  # which targets hold the reader's work

    # ---- the state ---------------------------------------------------------------------------------------

    def _targets(self) -> dict[str, list[str]]:
        if self.session is None or self.info is None:
            return {}
        return self.session.engineStructures(self.info)

    def _build(self) -> AIState:
        targets = []
        for structure_id, engine_ids in self._targets().items():
            state = self.session.structure(structure_id)
            work = (
                state.edit in (ACCEPTED, REFINED) or state.state == DONE or (state.ai is None and state.edit != EMPTY)
            )
            name = self.session.protocol.structure(structure_id).name
            targets.append(TargetRow(structure_id, name, tuple(engine_ids), structure_id in self.chosen, work))
        job = self.background.job(ENGINE_JOB)
        usable = next((e["usable"] for e in self.engines if e["name"] == self.engine_name), False)
        running = job is not None
        actions = {
            "refresh": first_off(
                (self.background.running(ENGINES_JOB), "listing the engines"),
            ),
            "run": first_off(
                (self.session is None, "no case is open"),
                (self.engine_name is None, "choose an engine"),
                (not usable, "this engine cannot run here"),
                (self.info is None, "reading what the engine proposes"),
                (running, "running"),
                (not self.chosen, "choose at least one structure"),
            ),
            "cancel": first_off(
                (not running, "nothing runs"),
            ),
        }
        return AIState(
            tuple(EngineRow(e["name"], e["usable"], e["detail"]) for e in self.engines),
            self.engine_name,
            tuple(targets),
            Progress(*job.progress) if job is not None else None,
            self.confirm,
            self.last_run,
            self.message,
            self.message_is_error,
            actions,
        )

    # ---- actions -------------------------------------------------------------------------------------------

    def refresh_engines(self) -> bool:
        """List the registry's engines (probing them imports their packages: a job)."""
        if self.background.running(ENGINES_JOB):
            return False

        def done(rows) -> None:
            self.engines = rows
            if self.engine_name is None:
                first = next((r["name"] for r in rows if r["usable"]), None)
                if first is not None:
                    self.choose_engine(first)
            self.refresh()

        self.background.start(ENGINES_JOB, lambda progress, cancel: list_engines(), done, self._failed)
        self.refresh()
        return True

    def choose_engine(self, name: str) -> bool:
        known = {e["name"]: e for e in self.engines}
        if name not in known:
            return self._told(f"engine: '{name}' is not one of {', '.join(known) or 'the engines (list them first)'}")
        if not known[name]["usable"]:
            return self._told(f"engine {name}: {known[name]['detail']}")
        self.engine_name, self.engine, self.info, self.confirm = name, None, None, ""
        self.tell("")
        options = self.engine_options.get(name, {})

        def work(progress, cancel):
            engine = get_engine(name, **options)
            return engine, engine.info()

        def done(answer) -> None:
            if self.engine_name == name:
                self.engine, self.info = answer
                self.chosen = set(self._targets())
            self.refresh()

        self.background.start(INFO_JOB, work, done, self._failed)
        self.refresh()
        return True

    def choose_structures(self, structure_ids) -> bool:
        """Which of the engine's structures to propose (all of them by default)."""
        known = set(self._targets())
        unknown = sorted(set(structure_ids) - known)
        if unknown:
            return self._told(f"structures: the engine cannot propose {', '.join(unknown)} here")
        self.chosen, self.confirm = set(structure_ids), ""
        self.refresh()
        return True

    def run(self, confirmed: bool = False) -> bool:
        """Run the engine on the case image in a job; without ``confirmed``, a run that would replace the
        reader's work stops at ``confirm`` (the view asks)."""
        action = self._build().actions["run"]
        if not action.enabled:
            return self._told(f"run: {action.reason}")
        targets = {t.structure_id: t for t in self._build().targets if t.chosen}
        replaced = [t.name for t in targets.values() if t.reader_work]
        if replaced and not confirmed:
            self.confirm = f"replace your work on {', '.join(replaced)} with the AI's proposal?"
            self.refresh()
            return False
        self.confirm = ""
        session, engine, info = self.session, self.engine, self.info
        structures = sorted(targets)
        wanted = [e for t in targets.values() for e in t.engine_structures]
        image = session.engineImage()  # a copy of the scene's voxels, taken here, on the scene's thread

        def work(progress, cancel):
            return engine.run(image, wanted, progress=progress, cancel=cancel)

        def done(result) -> None:
            if self.session is not session or session.closed:
                return  # the case closed while the engine ran
            applied = session.applyEngineResult(info, result, structures)
            names = [session.protocol.structure(s).name for s in applied["structures"]]
            self.last_run = f"{info.name} {info.version} proposed {', '.join(names) or 'nothing'}"
            self.tell(self.last_run)
            self.refresh()

        self.background.start(ENGINE_JOB, work, done, self._failed)
        self.tell(f"running {info.name} on {len(structures)} structure(s)")
        self.refresh()
        return True

    def cancel(self) -> bool:
        return self.background.cancel(ENGINE_JOB)

    def _failed(self, error) -> None:
        if isinstance(error, CancelledError):
            self.tell("cancelled: nothing was changed")
        else:
            self.tell(f"{type(error).__name__}: {error}", error=True)
        self.refresh()

    def poll(self) -> bool:
        """Hand finished jobs over (on this thread) and announce changes: the model's own pump."""
        handed = self.background.poll()
        return self.refresh() or bool(handed)
