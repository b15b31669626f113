"""Server settings: one data directory and safe defaults; every value can come from the command line or
from a ``MEDANNOT_*`` environment variable (the command line wins)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

MB = 1024 * 1024


def _env(name: str, default, kind=str):
    value = os.environ.get(f"MEDANNOT_{name.upper()}")
    if value is None or value == "":
        return default
    if kind is bool:
        return value.strip().lower() in ("1", "true", "yes", "on")
    return kind(value)


@dataclass
class Settings:
    data_dir: Path = field(default_factory=lambda: Path(_env("data_dir", "var/server")))
    # empty: SQLite (WAL) in data_dir; postgresql+psycopg://... for PostgreSQL and several replicas
    database_url: str = field(default_factory=lambda: _env("database_url", ""))
    host: str = field(default_factory=lambda: _env("host", "127.0.0.1"))
    port: int = field(default_factory=lambda: _env("port", 8000, int))
    max_upload_bytes: int = field(default_factory=lambda: _env("max_upload_bytes", 512 * MB, int))
    # a lease lasts this long unless the claim asks for less (or more, up to max_lease_seconds)
    lease_seconds: float = field(default_factory=lambda: _env("lease_seconds", 300.0, float))
    max_lease_seconds: float = field(default_factory=lambda: _env("max_lease_seconds", 3600.0, float))
    # images and segmentations larger than this are refused from their header, before any allocation
    max_voxels: int = field(default_factory=lambda: _env("max_voxels", 1024 * 1024 * 1024, int))
    max_bulk_cases: int = field(default_factory=lambda: _env("max_bulk_cases", 5000, int))
    log_level: str = field(default_factory=lambda: _env("log_level", "info"))
    # uvicorn worker processes of this server (one listening socket; each process its own engine and pool)
    workers: int = field(default_factory=lambda: _env("workers", 1, int))
    # background jobs (consensus): worker threads in each server process (0: leave them to `medannot worker`),
    # the lease a running job holds (heartbeated; a dead worker's job is taken again after it), attempts
    # before a job stays failed, the first retry's delay (doubling), and a Dask scheduler for the compute
    job_threads: int = field(default_factory=lambda: _env("job_threads", 1, int))
    job_lease_seconds: float = field(default_factory=lambda: _env("job_lease_seconds", 60.0, float))
    job_max_attempts: int = field(default_factory=lambda: _env("job_max_attempts", 3, int))
    job_retry_seconds: float = field(default_factory=lambda: _env("job_retry_seconds", 30.0, float))
    dask_scheduler: str = field(default_factory=lambda: _env("dask_scheduler", ""))

    def __post_init__(self):
        self.data_dir = Path(self.data_dir)

    @property
    def url(self) -> str:
        """The SQLAlchemy URL: the configured one, or SQLite in the data directory."""
        if self.database_url:
            return normalized_url(self.database_url)
        return f"sqlite:///{(self.data_dir / 'queue.sqlite3').resolve()}"

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    def environment(self) -> dict[str, str]:
        """These settings as ``MEDANNOT_*`` variables: what a worker process reads back with ``Settings()``."""
        return {f"MEDANNOT_{item.name.upper()}": str(getattr(self, item.name)) for item in fields(self)}

    @classmethod
    def from_args(cls, args) -> Settings:
        """Settings from argparse values named like the fields; None means 'not given'."""
        settings = cls()
        for item in fields(cls):
            value = getattr(args, item.name, None)
            if value is not None:
                setattr(settings, item.name, value)
        settings.__post_init__()
        return settings


def normalized_url(url: str) -> str:
    """``postgresql://`` and ``postgres://`` mean psycopg 3, the driver the server ships with."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url
