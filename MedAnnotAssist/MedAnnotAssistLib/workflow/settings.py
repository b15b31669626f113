"""The workstation's settings a front-end stores (Slicer's settings, the browser's local storage): the queue
server's URL, its CA bundle, the user's name and choices. Never the token: the front-end keeps it in its
secure setting and hands it to ``TaskModel.connect`` only."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

KINDS = (None, "annotate", "review")
EXPORT_FORMATS = ("seg", "rtstruct")


@dataclass
class WorkstationSettings:
    server_url: str = ""
    ca_bundle: str | None = None  # a PEM file of the authorities that signed the server's certificate
    user: str | None = None  # the user name the server answered last (shown before connecting)
    project_id: int | None = None  # the project chosen last
    task_kind: str | None = None  # claim "annotate" or "review" tasks only; None: what the roles allow
    lease_seconds: float | None = None  # None: the server's default
    idle_after_s: float = 60.0  # activity makes the next idle_after_s seconds count as active time
    sync_interval_s: float = 10.0  # outbox delivery and the offline probe
    review_poll_s: float = 2.0  # how often a reviewer's case is asked whether its consensus is done
    dicomweb_url: str | None = None  # where exports are sent (its credentials, like the token, are the front-end's)
    export_format: str = "seg"

    def __post_init__(self):
        problems = []
        if self.task_kind not in KINDS:
            problems.append(f"task_kind: expected annotate, review or none, got {self.task_kind!r}")
        if self.export_format not in EXPORT_FORMATS:
            problems.append(f"export_format: expected one of {', '.join(EXPORT_FORMATS)}, got {self.export_format!r}")
        for name in ("idle_after_s", "sync_interval_s", "review_poll_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                problems.append(f"{name}: expected seconds > 0, got {value!r}")
        if self.lease_seconds is not None and not (
            isinstance(self.lease_seconds, int | float) and self.lease_seconds > 0
        ):
            problems.append(f"lease_seconds: expected seconds > 0 or none, got {self.lease_seconds!r}")
        if problems:
            raise ValueError("workstation settings: " + "; ".join(problems))

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping | None) -> WorkstationSettings:
        """Settings saved by ``to_json``; unknown keys (a newer version's) are ignored, a wrong value is named."""
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise ValueError(f"workstation settings: expected an object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        if "token" in data:
            raise ValueError("workstation settings: a token is never stored with the settings (keep it apart)")
        return cls(**{key: value for key, value in data.items() if key in known})
