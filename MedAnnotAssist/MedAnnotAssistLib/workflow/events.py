"""What every panel model shares: change notifications, actions with the reason they are off, and the
clock-driven wait that scripts and tests use instead of an event loop.

A model is an ``Observable``: ``subscribe(listener)`` returns the function that unsubscribes it, and each
change calls ``listener(event)`` with an ``Event`` (a name and a payload dict) on the thread that called
the model (the GUI thread in Slicer, trame's loop in the browser). Every model emits ``"changed"`` with its
new ``state`` (a frozen dataclass a view renders as is); a few emit more specific events, listed in their
module. No Qt signals: the same model serves Qt and trame.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

log = logging.getLogger("MedAnnotAssist.workflow")


@dataclass(frozen=True)
class Event:
    name: str
    payload: Mapping = field(default_factory=dict)

    def __getitem__(self, key: str):
        return self.payload[key]


@dataclass(frozen=True)
class Action:
    """Whether a button (or its keyboard shortcut) does something now, and if not, why (the UI shows it)."""

    enabled: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.enabled


def on(reason: str = "") -> Action:
    return Action(True, reason)


def off(reason: str) -> Action:
    return Action(False, reason)


def first_off(*checks: tuple[bool, str]) -> Action:
    """The action is off for the first ``(condition, reason)`` whose condition holds, else on."""
    for condition, reason in checks:
        if condition:
            return off(reason)
    return on()


class Observable:
    """Listeners by subscription; a failing listener is logged and never breaks the model or the others."""

    def __init__(self) -> None:
        self._listeners: list[Callable[[Event], None]] = []

    def subscribe(self, listener: Callable[[Event], None]) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self.unsubscribe(listener)

    def unsubscribe(self, listener: Callable[[Event], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def emit(self, name: str, **payload) -> None:
        event = Event(name, payload)
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # a view's bug must not stop the model or the other views
                log.exception("listener %r failed on %s", listener, name)


class Model(Observable):
    """A panel model: ``state`` is rebuilt by ``_build()`` and announced with ``"changed"`` when it differs
    from the last one announced (``refresh()``, called after each action and by the pump)."""

    def __init__(self) -> None:
        super().__init__()
        self._state = None
        self.message = ""
        self.message_is_error = False

    @property
    def state(self):
        if self._state is None:
            self._state = self._build()
        return self._state

    def _build(self):
        raise NotImplementedError

    def refresh(self) -> bool:
        """Rebuild the state; emit ``changed`` when it differs. True when it did."""
        new = self._build()
        if new == self._state:
            return False
        self._state = new
        self.emit("changed", state=new)
        return True

    def tell(self, message: str, error: bool = False) -> None:
        """The line the panel shows under its buttons (the last outcome, or why an action did nothing)."""
        self.message, self.message_is_error = message, error
        if error:
            log.info("%s: %s", type(self).__name__, message)

    def _told(self, text: str) -> bool:
        """An action that did nothing: say why, announce it, and answer False."""
        self.tell(text, error=True)
        self.refresh()
        return False


def wait_until(pump: Callable[[], object], condition: Callable[[], bool], timeout_s: float = 60.0, step_s=0.02):
    """Call ``pump()`` (a model's or the workstation's ``poll``) until ``condition()`` holds; ``TimeoutError``
    after ``timeout_s``. For scripts and tests: a front-end calls ``poll`` from its own loop instead."""
    deadline = time.monotonic() + timeout_s
    while True:
        pump()
        if condition():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"not reached within {timeout_s:g} s")
        time.sleep(step_s)
