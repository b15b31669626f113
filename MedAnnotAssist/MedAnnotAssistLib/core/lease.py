"""A held task's lease as a panel sees it: the countdown, heartbeats, and whether it was lost.

``Lease(client, project_id, task)`` wraps a claimed task; ``jobs.Heartbeat(lease).start()`` calls
``lease.beat()`` every ``lease.interval_s`` seconds on a background thread. The panel reads
``seconds_left()``, ``offline`` and ``lost`` (a ``LeaseLost`` with ``task_state`` and the case: offer a new
claim with ``QueueClient.claim_again``). An offline heartbeat is not a loss: an expired lease that nobody
claimed yet still works when the network comes back (docs/queue-api.md#claims-and-leases).
"""

from __future__ import annotations

from datetime import UTC, datetime

from .queue_errors import LeaseLost, Offline, QueueError

MIN_INTERVAL_S, MAX_INTERVAL_S = 1.0, 120.0


def expiry_seconds(text: str | None) -> float | None:
    """The server's ``lease_expires_at`` (ISO 8601, UTC) as epoch seconds."""
    if not text:
        return None
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


class Lease:
    """One claimed task. ``lease_seconds``: the extension each heartbeat asks for (None: the server's
    default); ``interval_s``: between heartbeats (default: a third of the lease's length at the claim)."""

    def __init__(
        self, client, project_id: int, task: dict, lease_seconds: float | None = None, interval_s: float | None = None
    ):
        if not task.get("lease_id"):
            raise ValueError(f"task {task.get('id')}: no lease_id: pass the task as claim() or my_tasks() answer it")
        self.client, self.project_id, self.task = client, int(project_id), dict(task)
        self.lease_seconds = lease_seconds
        self.lost: LeaseLost | None = None
        self.released = False
        self.offline = False
        self.last_error: QueueError | None = None
        self.beats = 0
        self._expires = expiry_seconds(task.get("lease_expires_at"))
        third = (self.seconds_left() or 300.0) / 3
        self.interval_s = float(interval_s) if interval_s else min(max(third, MIN_INTERVAL_S), MAX_INTERVAL_S)

    @property
    def task_id(self) -> int:
        return int(self.task["id"])

    @property
    def case_id(self) -> int:
        return int(self.task["case_id"])

    @property
    def lease_id(self) -> str:
        return self.task["lease_id"]

    @property
    def alive(self) -> bool:
        return self.lost is None and not self.released

    def seconds_left(self) -> float | None:
        """Seconds until the lease expires on the server's clock (0 once past), None when unknown."""
        if self._expires is None:
            return None
        return max(self._expires - self.client.server_time(), 0.0)

    def beat(self) -> bool:
        """One heartbeat; False once the lease is lost or released (the heartbeat job stops)."""
        if not self.alive:
            return False
        try:
            view = self.client.heartbeat(self.project_id, self.task_id, self.lease_id, self.lease_seconds)
        except LeaseLost as error:
            error.case_id = self.case_id
            self.lost, self.last_error = error, error
            return False
        except Offline as error:
            self.offline, self.last_error = True, error
            return True
        except QueueError as error:  # a 5xx, a revoked token: the next beat may do better; the panel shows it
            self.offline, self.last_error = False, error
            return True
        self.offline, self.last_error, self.beats = False, None, self.beats + 1
        self._expires = expiry_seconds(view.get("lease_expires_at")) or self._expires
        return True

    def release(self) -> None:
        """Give the task back (skip, close); the heartbeat stops at its next beat."""
        if self.alive:
            self.client.release(self.project_id, self.task_id, self.lease_id)
        self.released = True
