"""The workstation's heartbeat in Slicer: a QTimer calls ``Workstation.poll()`` (finished jobs hand their results
over on the GUI thread, the models announce their changes), and the case's clock follows the application:
paused while Slicer is in the background, and kept counting while the mouse moves over it (a reader scrolling
through slices is at work even without editing)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import qt
import slicer

if TYPE_CHECKING:
    from ..workflow.workstation import Workstation

POLL_MS = 100


class Pump:
    def __init__(self, workstation: Workstation, interval_ms: int = POLL_MS):
        self.workstation = workstation
        self._cursor = None
        self._pausedByFocus = False
        self.timer = qt.QTimer()
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self.onTick)
        slicer.app.applicationStateChanged.connect(self.onApplicationState)
        self.timer.start()

    def onTick(self) -> None:
        self.workstation.poll()
        position = qt.QCursor.pos()
        if position != self._cursor:
            self._cursor = position
            self.workstation.task.touch()

    def onApplicationState(self, state) -> None:
        """Slicer in the background: no active time; back in front: counting again (unless paused by hand)."""
        task = self.workstation.task
        if state == qt.Qt.ApplicationActive:
            if self._pausedByFocus:
                self._pausedByFocus = False
                task.resume()
        elif task.state.actions["pause"].enabled:
            self._pausedByFocus = True
            task.pause()

    def stop(self) -> None:
        self.timer.stop()
        slicer.app.applicationStateChanged.disconnect(self.onApplicationState)
