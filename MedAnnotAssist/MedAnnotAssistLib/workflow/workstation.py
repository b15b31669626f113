"""The panel models of one workstation, wired together, with the one pump a front-end calls.

``Workstation(context, settings)`` holds the task, protocol, questions, AI, review and export models and the
``Background`` jobs they share. The front-end calls ``poll()`` periodically (a QTimer of 100-200 ms in
Slicer, trame's asynchronous loop in the browser): finished jobs hand their results over, and every model
announces what changed. Keyboard shortcuts map to ``shortcuts()``, the same calls in Slicer and the browser.

Wiring: the case the task model opens binds the protocol, questions and AI models and becomes the export's
segmentation; a review task goes to the review model, whose decision ends the task; Submit asks the protocol
model's gate (rules with overrides, required questions).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..core.image_cache import ImageCache
from ..core.outbox import Outbox
from .ai import AIModel
from .background import Background
from .events import Action, Event, wait_until
from .export import ExportModel
from .protocol import ProtocolModel
from .questions import QuestionsModel
from .review import ReviewModel
from .settings import WorkstationSettings
from .task import TaskModel

# the keys of ``shortcuts()`` in Slicer and in the browser; Ctrl+Shift keeps clear of the Segment Editor's single
# keys (1-9, Escape, Space) and of typing in fields
SHORTCUT_KEYS = {
    "next_structure": "Ctrl+Shift+Down",
    "previous_structure": "Ctrl+Shift+Up",
    "accept": "Ctrl+Shift+A",
    "reject": "Ctrl+Shift+R",
    "submit": "Ctrl+Shift+Return",
    "next_case": "Ctrl+Shift+N",
}


@dataclass(frozen=True)
class Shortcut:
    name: str
    description: str
    call: Callable[[], object]
    action: Callable[[], Action]  # whether it does something now, and why not


class Workstation:
    """``work_dir``: where packed cases, review downloads and exports go (a temporary folder by default);
    ``outbox``/``cache``: the durable outbox and the image cache (the user's folders by default); ``clock``:
    the activity and schedule clock (``core.activity.ManualClock`` in tests)."""

    def __init__(
        self,
        context,
        settings: WorkstationSettings | None = None,
        *,
        work_dir: Path | None = None,
        outbox: Outbox | None = None,
        cache: ImageCache | None = None,
        clock: Callable[[], float] = time.monotonic,
        workers: int = 3,
        engine_options: Mapping[str, dict] | None = None,
        client_options: dict | None = None,
        anonymous_readers: bool = False,
    ):
        self.context = context
        self.settings = settings or WorkstationSettings()
        self.work_dir = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="medannot-"))
        self.background = Background(workers=workers)
        cache = cache if cache is not None else ImageCache()
        self.task = TaskModel(
            context,
            self.background,
            self.settings,
            outbox=outbox,
            cache=cache,
            work_dir=self.work_dir / "cases",
            clock=clock,
            client_options=client_options,
        )
        self.protocol = ProtocolModel(clock)
        self.questions = QuestionsModel()
        self.ai = AIModel(self.background, engine_options)
        self.review = ReviewModel(
            context,
            self.background,
            cache=cache,
            work_dir=self.work_dir / "review",
            clock=clock,
            poll_s=self.settings.review_poll_s,
            anonymous_readers=anonymous_readers,
        )
        self.export = ExportModel(self.background, self.work_dir / "export", self.settings.export_format)
        self.task.gate = self.protocol.gate
        self.protocol.subscribe(lambda event: self.task.refresh() if event.name == "changed" else None)  # Submit
        self.task.subscribe(self._on_task)
        self.review.subscribe(self._on_review)

    @property
    def models(self) -> tuple:
        return (self.task, self.protocol, self.questions, self.ai, self.review, self.export)

    def _on_task(self, event: Event) -> None:
        if event.name == "session":
            session = event["session"]
            for model in (self.protocol, self.questions, self.ai):
                model.bind(session)
            if session is None:
                self.export.set_case(None, None)
                return
            self.review.close()  # a reviewed case leaves the scene when the next case opens
            self.export.set_case(session.segmentationNode, session.protocol, session.name, "your segmentation")
            self.export.set_dicom_source(session.imagePath if session.imagePath.is_dir() else None)
        elif event.name == "project":
            if not self.ai.engines:
                self.ai.refresh_engines()
        elif event.name == "review_task":
            task = self.task
            self.review.begin(task.client, task.project["id"], task.protocol, event["task"], event["case"])

    def _on_review(self, event: Event) -> None:
        if event.name == "closed" and self.task.session is None:
            self.export.set_case(None, None)
        elif event.name == "decided":
            self.task.finish(self.review.message)
        elif event.name == "loaded":
            review = self.review
            final = getattr(review, "final_node", None)
            proposal = "the consensus" if getattr(review, "one_reader", None) is None else "the reader's proposal"
            node, what = (final, "the approved final") if final is not None else (review.review.consensusNode, proposal)
            self.export.set_case(node, review.protocol, review.case["name"], what)
            self.export.set_dicom_source(None)

    def poll(self) -> bool:
        """The pump: hand finished jobs' results over, then let every model announce its changes. True when
        something changed."""
        handed = self.background.poll()
        changed = [model.poll() for model in self.models]
        return bool(handed) or any(changed)

    def wait_until(self, condition: Callable[[], bool], timeout_s: float = 60.0) -> None:
        """Pump until ``condition()`` holds (scripts and tests; a front-end pumps from its own loop)."""
        try:
            wait_until(self.poll, condition, timeout_s)
        except TimeoutError as error:
            told = "; ".join(f"{type(m).__name__}: {m.message}" for m in self.models if m.message)
            raise TimeoutError(f"{error} (the panels say: {told or 'nothing'})") from None

    def idle(self) -> bool:
        """No job is running (downloads, engine runs, deliveries)."""
        return not self.background.running()

    def shortcuts(self) -> dict[str, Shortcut]:
        """The keyboard's actions; the front-end binds keys to them and lists them in its help."""
        protocol, task = self.protocol, self.task

        def row_action(name: str) -> Callable[[], Action]:
            def current() -> Action:
                selected = protocol.state.selected
                if selected is None:
                    return Action(False, "select a structure")
                return protocol.state.row(selected).actions[name]

            return current

        always = lambda: Action(protocol.session is not None, "no case is open")  # noqa: E731
        items = [
            Shortcut("next_structure", "select the next structure", protocol.next_structure, always),
            Shortcut("previous_structure", "select the previous structure", protocol.previous_structure, always),
            Shortcut(
                "accept", "accept the AI's proposal of the selected structure", protocol.accept, row_action("accept")
            ),
            Shortcut(
                "reject", "reject the AI's proposal of the selected structure", protocol.reject, row_action("reject")
            ),
            Shortcut("submit", "submit the case", task.submit, lambda: task.state.actions["submit"]),
            Shortcut("next_case", "claim the next task", task.next_task, lambda: task.state.actions["next_task"]),
        ]
        return {item.name: item for item in items}

    def close(self) -> None:
        """The application closes: the case leaves the scene, the lease is kept, the outbox keeps the rest."""
        self.review.close()
        self.task.close()
        self.background.shutdown()
