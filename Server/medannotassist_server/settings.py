"""Server settings: one data directory and safe defaults; every value can come from the command line or
from a ``MEDANNOT_*`` environment variable (the command line wins)."""

from __future__ import annotations

import ipaddress
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
    # a host other than loopback is refused unless this is set: the server speaks plain HTTP
    allow_remote: bool = field(default_factory=lambda: _env("allow_remote", False, bool))
    port: int = field(default_factory=lambda: _env("port", 8000, int))
    max_upload_bytes: int = field(default_factory=lambda: _env("max_upload_bytes", 512 * MB, int))
    # a lease lasts this long unless the claim asks for less (or more, up to max_lease_seconds)
    lease_seconds: float = field(default_factory=lambda: _env("lease_seconds", 300.0, float))
    max_lease_seconds: float = field(default_factory=lambda: _env("max_lease_seconds", 3600.0, float))
    # images and segmentations larger than this are refused from their header, before any allocation
    max_voxels: int = field(default_factory=lambda: _env("max_voxels", 1024 * 1024 * 1024, int))
    # and larger than this once decompressed (voxels x components x bytes per voxel): a gzip bomb stays small
    max_image_bytes: int = field(default_factory=lambda: _env("max_image_bytes", 1024 * MB, int))
    max_bulk_cases: int = field(default_factory=lambda: _env("max_bulk_cases", 5000, int))
    log_level: str = field(default_factory=lambda: _env("log_level", "info"))
    # uvicorn worker processes of this server (one listening socket; each process its own engine and pool)
    workers: int = field(default_factory=lambda: _env("workers", 1, int))
    # the audit chain's key and its signed checkpoints, outside the database (empty: in data_dir, see audit_keys)
    audit_key_file: str = field(default_factory=lambda: _env("audit_key_file", ""))
    audit_checkpoint_file: str = field(default_factory=lambda: _env("audit_checkpoint_file", ""))
    # a checkpoint every so many audit rows or, when fewer came, this many seconds after the first of them
    audit_checkpoint_rows: int = field(default_factory=lambda: _env("audit_checkpoint_rows", 10_000, int))
    audit_checkpoint_seconds: float = field(default_factory=lambda: _env("audit_checkpoint_seconds", 10.0, float))
    # background jobs (consensus): worker threads in each server process (0: leave them to `medannot worker`),
    # the lease a running job holds (heartbeated; a dead worker's job is taken again after it), attempts
    # before a job stays failed, the first retry's delay (doubling), and a Dask scheduler for the compute
    job_threads: int = field(default_factory=lambda: _env("job_threads", 1, int))
    job_lease_seconds: float = field(default_factory=lambda: _env("job_lease_seconds", 60.0, float))
    job_max_attempts: int = field(default_factory=lambda: _env("job_max_attempts", 3, int))
    job_retry_seconds: float = field(default_factory=lambda: _env("job_retry_seconds", 30.0, float))
    dask_scheduler: str = field(default_factory=lambda: _env("dask_scheduler", ""))
    # claims, heartbeats and releases: committed in batches by one writer per process (group_commit), at most
    # batch_max to a transaction, waiting at most batch_wait_ms (capped at 2) for more under load; durability
    # "full" fsyncs every batch, "relaxed" lets a power loss take the last fraction of a second of lease changes
    durability: str = field(default_factory=lambda: _env("durability", "full"))
    batch_max: int = field(default_factory=lambda: _env("batch_max", 64, int))
    batch_wait_ms: float = field(default_factory=lambda: _env("batch_wait_ms", 0.5, float))

    def __post_init__(self):
        self.data_dir = Path(self.data_dir)

    @property
    def url(self) -> str:
        """The SQLAlchemy URL: the configured one, or SQLite in the data directory."""
        if self.database_url:
            return normalized_url(self.database_url)
        return f"sqlite:///{(self.data_dir / 'queue.sqlite3').resolve()}"

    def remote_warning(self) -> str | None:
        """None on a loopback address; the warning to print when binding another one is allowed; else
        RemoteHostRefusedError."""
        if is_loopback(self.host):
            return None
        if not self.allow_remote:
            raise RemoteHostRefusedError(
                f"--host {self.host} is not a loopback address: the server speaks plain HTTP, so tokens and images "
                "would cross the network in clear. Terminate TLS in a reverse proxy in front of it and pass "
                "--allow-remote (MEDANNOT_ALLOW_REMOTE=1), or bind 127.0.0.1 behind the proxy"
            )
        return (
            f"binding {self.host} (--allow-remote): TLS must be terminated in front of this server (a reverse proxy "
            "such as nginx or Caddy); only that proxy should reach this port"
        )

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def audit_key_path(self) -> Path:
        return Path(self.audit_key_file) if self.audit_key_file else self.data_dir / "audit.key"

    @property
    def audit_checkpoint_path(self) -> Path:
        return (
            Path(self.audit_checkpoint_file)
            if self.audit_checkpoint_file
            else self.data_dir / "audit-checkpoints.jsonl"
        )

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


class RemoteHostRefusedError(ValueError):
    pass


def is_loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


def private_data_dir(settings: Settings) -> None:
    """What the server writes is its account's alone: the data directory 0700, files 0600 (SQLite and its
    WAL, blobs, keys, temporary files), through this process's umask, which worker processes inherit."""
    os.umask(0o077)
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if settings.data_dir.stat().st_mode & 0o077:
        settings.data_dir.chmod(0o700)


def normalized_url(url: str) -> str:
    """``postgresql://`` and ``postgres://`` mean psycopg 3, the driver the server ships with."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url
