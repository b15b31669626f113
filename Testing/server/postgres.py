"""A throwaway PostgreSQL 15 cluster for the tests: initdb + pg_ctl in a temporary directory, on a free
loopback port, stopped and removed at the end.

``initdb`` refuses to run as root: as root the cluster runs as the ``postgres`` user (``runuser``) in a
directory that user owns; as any other user it runs as that user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

PG_BIN = Path(os.environ.get("MEDANNOT_PG_BIN", "/usr/lib/postgresql/15/bin"))


class PostgresUnavailableError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PostgresCluster:
    def __init__(self):
        self.root: Path | None = None
        self.port = free_port()
        self.user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        self.running = False

    def _run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        result = subprocess.run([*prefix, *command], capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            raise PostgresUnavailableError(
                f"{' '.join(command)} failed: {result.stderr.strip() or result.stdout.strip()}"
            )
        return result

    def start(self) -> PostgresCluster:
        for tool in ("initdb", "pg_ctl", "createdb"):
            if not (PG_BIN / tool).is_file():
                raise PostgresUnavailableError(f"{PG_BIN / tool} not found (Debian package postgresql-15)")
        if os.geteuid() == 0 and shutil.which("runuser") is None:
            raise PostgresUnavailableError("runuser not found: cannot run initdb as the postgres user")
        self.root = Path(tempfile.mkdtemp(prefix="medannot-pg-"))
        if os.geteuid() == 0:
            record = pwd.getpwnam("postgres")
            os.chown(self.root, record.pw_uid, record.pw_gid)
        data, socket_dir = self.root / "data", self.root
        self._run(
            str(PG_BIN / "initdb"), "-D", str(data), "-U", self.user, "-A", "trust", "-E", "UTF8", "--no-sync"
        )  # fmt: skip
        options = f"-p {self.port} -k {socket_dir} -c listen_addresses=127.0.0.1 -c max_connections=300"
        self._run(
            str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(self.root / "postgres.log"),
            "-w", "-t", "60", "start",
        )  # fmt: skip
        self.running = True
        return self

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        name = name or f"queue_{uuid.uuid4().hex[:12]}"
        self._run(str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, name)
        return self.url(name)

    def url(self, name: str) -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        if self.running:
            self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.root / "data"), "-m", "fast", "-w", "stop", check=False)
            self.running = False
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def log_tail(self, lines: int = 30) -> str:
        log = self.root / "postgres.log" if self.root else None
        if log is None or not log.is_file():
            return ""
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        raise PostgresUnavailableError(f"PostgreSQL did not listen on port {self.port}")
