"""bench/client.py times phases inside the real code: each wrapped function's own time, nested calls to other
timed functions counted for their own phase, and everything restored afterwards."""

from __future__ import annotations

import time
import types

import pytest

from bench.client import PhaseClock


class Loader:
    @classmethod
    def open(cls, seconds: float) -> str:
        time.sleep(seconds)
        return module.read(2 * seconds)

    def check(self, seconds: float) -> int:
        time.sleep(seconds)
        return 7


def _read(seconds: float) -> str:
    time.sleep(seconds)
    return "read"


module = types.SimpleNamespace(read=_read)


def test_each_phase_gets_its_own_time_and_the_code_is_restored():
    original_open, original_check = Loader.__dict__["open"], Loader.__dict__["check"]
    clock = PhaseClock()
    clock.wrap(Loader, "open", "session")
    clock.wrap(Loader, "check", "rules")
    clock.wrap(module, "read", "load")

    assert Loader.open(0.1) == "read" and Loader().check(0.05) == 7  # results pass through
    seconds = clock.take()
    assert seconds["session"] == pytest.approx(0.1, abs=0.08)  # without the 0.2 s read inside it
    assert seconds["load"] == pytest.approx(0.2, abs=0.08)
    assert seconds["rules"] == pytest.approx(0.05, abs=0.08)
    assert clock.take() == {}

    clock.restore()
    assert Loader.__dict__["open"] is original_open and Loader.__dict__["check"] is original_check
    assert module.read is _read
