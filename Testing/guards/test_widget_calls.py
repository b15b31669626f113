"""No HTTP, engine run, sleep or child process is reachable from a widget except through core/jobs.py.

The acceptance check of the Qt layer: every function of MedAnnotAssist.py and widgets/ may run as a slot on
Slicer's GUI thread; Testing/guards/gui_thread.py follows what they call (through workflow/, mrml/, core/)
and reports each path to a sink. The guard is tested on crafted code that does each forbidden thing.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from Testing.conftest import MODULE_DIR
from Testing.guards.callgraph import CallGraph, Function
from Testing.guards.gui_thread import EXTERNAL_SINKS, PACKAGE_SINKS, analyse, sinkOf

LIB = MODULE_DIR / "MedAnnotAssistLib"
WIDGET_MODULES = ("MedAnnotAssist", "MedAnnotAssistLib.widgets")


def module_sources(module_dir: Path = MODULE_DIR) -> tuple[dict[str, tuple[str, str]], set[str]]:
    lib = module_dir / "MedAnnotAssistLib"
    sources, packages = {}, set()
    for path in sorted(lib.rglob("*.py")):
        parts = ("MedAnnotAssistLib", *path.relative_to(lib).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
            packages.add(".".join(parts))
        sources[".".join(parts)] = (path.read_text(), path.relative_to(module_dir).as_posix())
    module_file = module_dir / "MedAnnotAssist.py"
    sources["MedAnnotAssist"] = (module_file.read_text(), module_file.name)
    return sources, packages


def is_widget_slot(function: Function) -> bool:
    """Anything in the module file or widgets/ may run on the GUI thread, except the in-Slicer test class."""
    in_widgets = function.module.name == "MedAnnotAssist" or function.module.name.startswith(WIDGET_MODULES[1])
    return in_widgets and not (function.cls and function.cls.node.name.endswith("Test"))


def analyse_module(module_dir: Path = MODULE_DIR):
    sources, packages = module_sources(module_dir)
    graph = CallGraph(sources, packages)
    return graph, analyse(graph, is_widget_slot)


@pytest.fixture(scope="module")
def real():
    return analyse_module()


def test_no_widget_slot_reaches_http_an_engine_or_a_sleep(real):
    _graph, report = real
    assert not report.violations, "\n\n".join(report.violations)


def test_the_guard_sees_the_real_paths(real):
    """Not vacuous: slots reach the mrml layer, and the engine run is found handed to core.jobs."""
    graph, report = real
    assert "MedAnnotAssistLib.widgets.protocol_panel.ProtocolPanel.onApplyProtocol" in report.reached
    assert "MedAnnotAssistLib.mrml.protocol_segments.checkSegmentation" in report.reached
    assert any(h.startswith("MedAnnotAssist.py:") and "runEngine" in h for h in report.handed), report.handed
    functions = [f.qualname for f in graph.functions()]
    for pattern in PACKAGE_SINKS:  # a sink renamed away would make the guard pass vacuously
        assert any(sinkOf(f) for f in graph.functions() if f.qualname.startswith(pattern.split("*")[0])), pattern
    assert "MedAnnotAssistLib.core.queue_client.QueueClient._send" in functions


def _path_exists(graph: CallGraph, source: str, target: str) -> bool:
    """``target`` is reached from ``source`` on the GUI thread (calls and references, not handed to jobs)."""
    seen, todo = {source}, [graph.symbols[source]]
    while todo:
        edges, _handed = graph.edges(todo.pop())
        for edge in edges:
            if isinstance(edge.target, Function) and edge.target.qualname not in seen:
                if edge.target.qualname == target:
                    return True
                seen.add(edge.target.qualname)
                todo.append(edge.target)
    return False


W, M = "MedAnnotAssistLib.widgets.", "MedAnnotAssistLib.workflow."


@pytest.mark.parametrize(
    ("slot", "action"),
    [
        (W + "task_panel.TaskPanel.onConnect", M + "task.TaskModel.connect"),
        (W + "task_panel.TaskPanel.onSubmit", M + "task.TaskModel.submit"),
        (W + "case_protocol_panel.CaseProtocolPanel.onKeep", M + "protocol.ProtocolModel.override"),
        (W + "ai_panel.AIPanel.onRun", M + "ai.AIModel.run"),
        (W + "review_panel.ReviewPanel.onApprove", M + "review.ReviewModel.approve"),
        (W + "export_panel.ExportPanel.onExport", M + "export.ExportModel.export"),
        (W + "shortcuts.Shortcuts.press", M + "task.TaskModel.next_task"),
        (W + "pump.Pump.onTick", M + "workstation.Workstation.poll"),
        (W + "task_panel.TaskPanel.onNextTask", "MedAnnotAssistLib.mrml.task_session.TaskSession.open"),  # in poll()
    ],
)
def test_the_guard_follows_each_section_into_its_model(real, slot, action):
    """Not vacuous for the workstation's sections: their slots are roots and reach the models' actions (and the
    server calls behind them are found handed to core.jobs, or the guard's first test would fail)."""
    graph, report = real
    assert slot in report.reached and _path_exists(graph, slot, action)


CRAFTED = {
    "MedAnnotAssistLib.core.jobs": """
        class Job:
            def result(self):
                return None

        class JobRunner:
            def submit(self, name, function, *args, **kwargs) -> Job:
                return Job()

        class Periodic:
            def __init__(self, name, function, interval_s):
                self.function = function
    """,
    "MedAnnotAssistLib.core.queue_client": """
        import time

        class QueueClient:
            def __init__(self, url: str, token: str):
                self.url = url

            def claim(self, project: int) -> dict:
                return self._send("POST", "/claim")

            def heartbeat(self) -> dict:
                return self._send("POST", "/heartbeat")

            def _send(self, method, path):
                import requests

                return requests.Session().request(method, path)
    """,
    "MedAnnotAssistLib.core.engines.base": """
        class Engine:
            def info(self):
                return {}

            def run(self, image, structures=None, progress=None, cancel=None):
                raise NotImplementedError
    """,
    "MedAnnotAssistLib.core.engines.remote": """
        from urllib import request

        from .base import Engine

        class RemoteEngine(Engine):
            def info(self):
                return request.urlopen("http://127.0.0.1:8000/info/")

            def run(self, image, structures=None, progress=None, cancel=None):
                return self.info()
    """,
    "MedAnnotAssistLib.core.engines": """
        from .base import Engine

        def get_engine(name: str) -> Engine:
            return Engine()
    """,
    "MedAnnotAssistLib.workflow.background": """
        from ..core.jobs import JobRunner

        class Background:
            def __init__(self, runner: JobRunner | None = None):
                self.runner = runner or JobRunner()

            def start(self, name, work, done=None):
                self.done = done
                return self.runner.submit(name, work)
    """,
    "MedAnnotAssistLib.workflow.task": """
        import logging

        from ..core.queue_client import QueueClient
        from .background import Background

        log = logging.getLogger("task")

        class TaskModel:
            def __init__(self, client: QueueClient, background: Background):
                self.client, self.background = client, background

            def claimNext(self):
                log.info("claiming")
                self.background.start("claim", lambda progress, cancel: self.client.claim(1), done=self._claimed)

            def _claimed(self, task):
                self.task = task

            def refreshNow(self):
                return self.client.claim(1)
    """,
    "MedAnnotAssistLib.widgets.panel": """
        import time
        from time import sleep

        import qt

        from ..core.engines import get_engine
        from ..core.jobs import JobRunner, Periodic
        from ..core.queue_client import QueueClient
        from ..workflow.task import TaskModel

        def _work(client, progress=None, cancel=None):
            return client.claim(1)

        class Panel:
            def __init__(self, model: TaskModel):
                self.model = model
                self.client = QueueClient("https://queue", "token")
                self.jobs = JobRunner()

            def onClaimDirect(self):
                self.client.claim(1)

            def onClaimModel(self):
                self.model.claimNext()

            def onRefresh(self):
                self.model.refreshNow()

            def onSleep(self):
                time.sleep(1)

            def onSleepImported(self):
                sleep(0.1)

            def onRun(self, image):
                engine = get_engine("remote")
                self.jobs.submit("run", engine.run, image)
                return engine.info()

            def onRunInWorker(self, image):
                engine = get_engine("remote")
                self.jobs.submit("run", engine.run, image)

            def onTimer(self):
                qt.QTimer.singleShot(0, self.client.heartbeat)

            def onHeartbeat(self):
                Periodic("heartbeat", self.client.heartbeat, 30)

            def onWorker(self):
                self.jobs.submit("work", _work, self.client)

            def onGuess(self, thing):
                thing.run(None)

            def onGuessReference(self, model):
                qt.QTimer.singleShot(0, model.refreshNow)

            def onLazy(self):
                from ..core.queue_client import QueueClient as Client

                Client("https://queue", "token").heartbeat()
    """,
}


@pytest.fixture(scope="module")
def crafted():
    sources = {name: (textwrap.dedent(text), name.replace(".", "/") + ".py") for name, text in CRAFTED.items()}
    graph = CallGraph(sources, {"MedAnnotAssistLib.core.engines"})
    return graph, analyse(graph, lambda f: f.module.name == "MedAnnotAssistLib.widgets.panel")


@pytest.fixture(scope="module")
def crafted_report(crafted):
    return crafted[1]


def _violations_of(report, slot: str) -> list[str]:
    return [v for v in report.violations if v.split(" -> ")[0].endswith(f" Panel.{slot}")]


@pytest.mark.parametrize(
    ("slot", "path_end"),
    [
        ("onClaimDirect", "QueueClient._send (calls at line 9): HTTP to the task queue"),
        ("onRefresh", "QueueClient._send (calls at line 9): HTTP to the task queue"),
        ("onSleep", "time.sleep (calls at line 31): a sleep"),
        ("onSleepImported", "time.sleep (calls at line 34): a sleep"),
        ("onRun", "urllib.request.urlopen (calls at line 8): HTTP"),
        ("onTimer", "QueueClient._send (calls at line 12): HTTP to the task queue"),
        ("onGuess", "RemoteEngine.run (calls (guessed by name) at line 55): an engine run"),
        ("onGuessReference", "QueueClient._send (calls at line 9): HTTP to the task queue"),
        ("onLazy", "QueueClient._send (calls at line 12): HTTP to the task queue"),
    ],
)
def test_the_guard_reports_each_forbidden_path(crafted_report, slot, path_end):
    found = _violations_of(crafted_report, slot)
    assert any(v.endswith(path_end) for v in found), "\n".join(crafted_report.violations)


def test_the_guard_follows_a_path_through_the_workflow_model(crafted_report):
    [path] = _violations_of(crafted_report, "onRefresh")
    assert " -> MedAnnotAssistLib/workflow/task.py:20 TaskModel.refreshNow (calls at line 28)" in path
    assert " -> MedAnnotAssistLib/core/queue_client.py:8 QueueClient.claim (calls at line 21)" in path


@pytest.mark.parametrize("slot", ["onClaimModel", "onRunInWorker", "onHeartbeat", "onWorker"])
def test_work_handed_to_core_jobs_is_allowed(crafted_report, slot):
    assert _violations_of(crafted_report, slot) == []


def test_worker_functions_and_their_hand_over_are_seen(crafted):
    graph, report = crafted
    assert not [v for v in report.violations if " _work" in v.split(" -> ")[0]]  # it runs in a worker only
    assert "MedAnnotAssistLib.workflow.task.TaskModel._claimed" in report.reached  # the done callback: GUI thread
    # Background.start passes its ``work`` on to core.jobs: what a caller gives there runs in a worker.
    assert graph.jobParams["MedAnnotAssistLib.workflow.background.Background.start"] == {"name", "work"}
    assert report.handed == [
        "MedAnnotAssistLib/widgets/panel.py:38 engine.run",
        "MedAnnotAssistLib/widgets/panel.py:43 engine.run",
        "MedAnnotAssistLib/widgets/panel.py:49 self.client.heartbeat",
        "MedAnnotAssistLib/widgets/panel.py:52 _work",
        "MedAnnotAssistLib/workflow/task.py:15 lambda progress, cancel: self.client.claim(1)",
    ]


def test_every_sink_pattern_names_something():
    assert all(what for what in [*EXTERNAL_SINKS.values(), *PACKAGE_SINKS.values()])
