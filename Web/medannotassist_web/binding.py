"""The workflow models' states in trame's shared state, and the pump that drives the workstation from trame's
asynchronous loop.

Each model's frozen state goes to the browser as plain JSON under the model's name (``task``, ``protocol``,
``questions``, ``ai``, ``review``): rows for tables, texts for labels, ``actions`` as ``{enabled, reason}``.
The token is never part of a state (the workflow guarantees it), so it never reaches the browser.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Mapping

log = logging.getLogger("medannotassist_web")
PUMP_S = 0.15  # Slicer's QTimer pumps every 100-200 ms too
MODELS = ("task", "protocol", "questions", "ai", "review")


def plain(value):
    """A model state (frozen dataclasses, mappings, tuples) as JSON values; properties of a state that views
    read (a row's blocking rules, the offline text) are added by ``state_json``."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (tuple, list, set, frozenset)):
        return [plain(item) for item in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def state_json(name: str, state) -> dict:
    data = plain(state)
    if name == "task":
        data["offline_text"] = state.offline_text
    elif name == "protocol":
        for row, shown in zip(state.rows, data["rows"], strict=True):
            shown["blocking"] = [plain(rule) for rule in row.blocking]
        data["selected_row"] = next((row for row in data["rows"] if row["selected"]), None)
    return data


class Pump:
    """Polls the workstation every ``PUMP_S`` on trame's loop and pushes the states that changed."""

    def __init__(self, server, workstation, on_event: Callable | None = None):
        self.server = server
        self.workstation = workstation
        self.on_event = on_event
        self._dirty = set(MODELS)
        self._task: asyncio.Task | None = None
        for name in MODELS:
            getattr(workstation, name).subscribe(lambda event, name=name: self._heard(name, event))
        self.push()

    def _heard(self, name: str, event) -> None:
        if event.name == "changed":
            self._dirty.add(name)
        if self.on_event is not None:
            self.on_event(name, event)

    def push(self) -> None:
        """The states that changed since the last push go to the browser (one message)."""
        dirty, self._dirty = self._dirty, set()
        if not dirty:
            return
        with self.server.state:
            for name in dirty:
                self.server.state[name] = state_json(name, getattr(self.workstation, name).state)

    def step(self) -> None:
        try:
            self.workstation.poll()
        except Exception:  # a failing model must not stop the pump: the others go on
            log.exception("the workstation's poll failed")
        self.push()

    def start(self) -> None:
        self._task = asyncio.get_event_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            self.step()
            await asyncio.sleep(PUMP_S)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
