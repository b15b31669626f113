"""The activity clock on a controlled clock: active time per case and per structure, idle time excluded,
pauses, and times carried over from an earlier sitting."""

from __future__ import annotations

import pytest

from MedAnnotAssistLib.core.activity import ActiveTimes, ActivityClock, ManualClock


def _clock(idle_after_s: float = 60.0):
    manual = ManualClock(1000.0)
    return manual, ActivityClock(idle_after_s, manual)


def test_active_time_goes_to_the_structure_in_focus():
    manual, clock = _clock()
    manual.advance(4)
    clock.select("liver")  # the 4 s before count for the case, no structure
    manual.advance(30)
    clock.activity()
    manual.advance(20)
    clock.select("spleen")
    manual.advance(12)
    clock.activity("liver")  # an edit of the liver takes the focus; the 12 s were the spleen's
    manual.advance(5)
    times = clock.times()
    assert times.structures == {"liver": 55.0, "spleen": 12.0}
    assert times.unassigned_s == 4.0
    assert times.case_s == 71.0 == sum(times.structures.values()) + times.unassigned_s
    assert times.idle_s == 0.0


def test_idle_time_is_excluded():
    """After an activity, at most idle_after_s counts; the rest of a long silence is idle."""
    manual, clock = _clock(idle_after_s=60)
    clock.select("liver")
    manual.advance(45)
    clock.activity()  # 45 s, all active
    manual.advance(600)  # the reader left: 60 s count, 540 s idle
    assert clock.idle
    clock.activity()
    assert not clock.idle
    manual.advance(10)
    times = clock.times()
    assert times.structure_s("liver") == 45 + 60 + 10
    assert times.idle_s == 540.0
    assert times.case_s == 115.0


def test_a_live_display_never_goes_backwards_and_reading_changes_nothing():
    manual, clock = _clock(idle_after_s=60)
    clock.select("liver")
    seen = []
    for _ in range(10):
        manual.advance(15)
        seen.append(clock.times().case_s)
    assert seen == [15, 30, 45, 60, 60, 60, 60, 60, 60, 60]  # stops at the idle limit, no retraction
    assert clock.times() == clock.times()


def test_pause_counts_nothing_and_resume_is_explicit():
    manual, clock = _clock()
    clock.select("liver")
    manual.advance(10)
    clock.pause()
    manual.advance(50)
    clock.activity("spleen")  # ignored while paused: the clock does not resume by itself
    clock.select("spleen")  # the focus may change while paused
    manual.advance(20)
    assert clock.paused and clock.times().case_s == 10.0
    clock.resume()
    manual.advance(7)
    times = clock.times()
    assert times.structures == {"liver": 10.0, "spleen": 7.0}
    assert times.paused_s == 70.0 and times.idle_s == 0.0


def test_times_carry_over_from_an_earlier_sitting():
    manual, first = _clock()
    first.select("liver")
    manual.advance(40)
    saved = first.times().to_json()
    later = ManualClock(5.0)
    second = ActivityClock(60, later, ActiveTimes.from_json(saved))
    second.select("liver")
    later.advance(8)
    assert second.times().structure_s("liver") == 48.0 and second.times().case_s == 48.0


@pytest.mark.parametrize(
    ("saved", "message"),
    [
        ({"case_s": -1}, r"times\.case_s: expected seconds >= 0, got -1"),
        ({"case_s": "ten"}, r"times\.case_s: expected seconds >= 0, got 'ten'"),
        ({"structures": {"liver": True}}, r"times\.structures\.liver: expected seconds >= 0, got True"),
        ({"structures": [1]}, r"times\.structures: expected an object"),
        ([1, 2], r"times: expected an object, got list"),
    ],
)
def test_bad_saved_times_name_the_field(saved, message):
    with pytest.raises(ValueError, match=message):
        ActiveTimes.from_json(saved)


def test_bad_settings():
    with pytest.raises(ValueError, match="idle_after_s: expected seconds > 0, got 0"):
        ActivityClock(0, ManualClock())
    with pytest.raises(ValueError, match="a clock only moves forward"):
        ManualClock().advance(-1)
