"""Minimal baselines for the task-queue benchmark, measured in the same run on the same machine
(``bench.queue --parts baselines``): what the machine gives without our server around the same work.

- bare endpoint: a FastAPI app with the claim and release routes of ours (same paths, async, the path
  parameters validated, the JSON body read) answering at once from memory, under the same uvicorn, load
  generator and clients: the ceiling of any server written this way on this machine;
- raw SQL: the server's own claim and release statements on SQLite through ``sqlite3``, in this process,
  without HTTP: one transaction per claim and per release with ``synchronous=FULL`` (an fsync each) and
  ``NORMAL``, and 32 claims and their releases per transaction (group commit's floor);
- pgbench: PostgreSQL alone, 32 connections, a ``SKIP LOCKED`` claim and a release per script, then the
  same with one global audit head row updated in each transaction (what every write did before the audit
  chains were split per project and committed in batches).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

import numpy as np

BARE_APP = """
from fastapi import FastAPI, Request
from fastapi.responses import Response

app = FastAPI()


@app.post("/api/v1/projects/{project_id}/tasks/claim")
async def claim(project_id: int, request: Request):
    await request.body()
    return Response(b'{"task":{"id":7,"lease_id":"0123456789abcdef0123456789abcdef","state":"leased"}}',
                    media_type="application/json")


@app.post("/api/v1/projects/{project_id}/tasks/{task_id}/release")
async def release(project_id: int, task_id: int, request: Request):
    await request.body()
    return Response(b'{"id":7,"state":"queued"}', media_type="application/json")
"""


class BareServer:
    """The bare app under uvicorn with the server's options (httptools, uvloop, no access log)."""

    def __init__(self, folder: Path, port: int):
        (folder / "bare_app.py").write_text(BARE_APP)
        self.port, self.folder = port, folder
        command = [sys.executable, "-m", "uvicorn", "bare_app:app", "--port", str(port), "--log-level", "warning",
                   "--no-access-log", "--timeout-keep-alive", "30"]  # fmt: skip
        self.process = subprocess.Popen(command, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        import httpx

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.post(f"http://127.0.0.1:{port}/api/v1/projects/1/tasks/claim", timeout=1)
                return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError("the bare endpoint did not start")

    def pids(self) -> list[int]:
        return [self.process.pid]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=15)


# --- raw SQL on SQLite ----------------------------------------------------------------------------------


def _sqlite_tasks(path: Path, tasks: int) -> None:
    from medannotassist_server.db import migrate

    migrate(f"sqlite:///{path}")
    connection = sqlite3.connect(path)
    now = "2026-01-01 00:00:00.000000"
    connection.execute("INSERT INTO users (id, name, is_site_admin, created_at) VALUES (1, 'u', 0, ?)", (now,))
    connection.execute(
        "INSERT INTO projects (id, name, protocol_id, protocol_version, protocol_checksum, protocol_json, "
        "readers_per_case, review_enabled, created_by, created_at) VALUES (1, 'p', 'x', '1', 'c', '{}', 1, 0, 1, ?)",
        (now,),
    )
    connection.executemany(
        "INSERT INTO cases (id, project_id, name, priority, state, round, created_at) VALUES (?, 1, ?, 0, "
        "'annotating', 1, ?)",
        [(i, f"c{i}", now) for i in range(1, tasks + 1)],
    )
    connection.executemany(
        "INSERT INTO tasks (id, project_id, case_id, kind, state, priority, round, created_at) VALUES "
        "(?, 1, ?, 'annotate', 'queued', 0, 1, ?)",
        [(i, i, now) for i in range(1, tasks + 1)],
    )
    connection.commit()
    connection.close()


def _raw_claim(cursor, candidate, take) -> tuple[int, str]:
    from medannotassist_server.models import utcnow

    now = utcnow()
    params = {"project_id": 1, "user_id": 1, "now": now}
    task_id = candidate.execute(cursor, params).fetchone()[0]
    lease = uuid.uuid4().hex
    take.execute(cursor, {**params, "task_id": task_id, "lease_id": lease, "expires": now + timedelta(seconds=300)})
    return task_id, lease


def raw_sql(seconds: float, tasks: int = 2000) -> list[dict]:
    """Claims/s of the server's claim and release SQL straight through sqlite3, one thread."""
    from sqlalchemy.dialects import sqlite

    from medannotassist_server import claims
    from medannotassist_server.driver_sql import DriverStatement

    dialect = sqlite.dialect()
    candidate = DriverStatement(claims._candidate("annotate", False, False), dialect)
    take = DriverStatement(claims._TAKE, dialect)
    release = DriverStatement(claims._RELEASE, dialect)
    rows = []
    with tempfile.TemporaryDirectory(prefix="medannot-raw-sql-") as folder:
        for label, synchronous, per_commit in (
            ("sqlite3, synchronous=FULL, a commit per claim and per release", "FULL", 1),
            ("sqlite3, synchronous=NORMAL, a commit per claim and per release", "NORMAL", 1),
            ("sqlite3, synchronous=FULL, 32 claims and releases per commit", "FULL", 32),
        ):
            path = Path(folder) / f"{synchronous}-{per_commit}.sqlite3"
            _sqlite_tasks(path, tasks)
            connection = sqlite3.connect(path, isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute(f"PRAGMA synchronous={synchronous}")
            cursor = connection.cursor()
            claimed, latencies = 0, []
            started = time.perf_counter()
            while time.perf_counter() - started < seconds:
                began = time.perf_counter()
                cursor.execute("BEGIN IMMEDIATE")
                held = [_raw_claim(cursor, candidate, take) for _ in range(per_commit)]
                if per_commit == 1:
                    cursor.execute("COMMIT")
                    cursor.execute("BEGIN IMMEDIATE")
                for task_id, lease in held:
                    params = {"f_task_id": task_id, "f_project_id": 1, "f_lease_id": lease, "f_user_id": 1}
                    release.execute(cursor, params)
                cursor.execute("COMMIT")
                claimed += per_commit
                latencies.append((time.perf_counter() - began) / per_commit)
            elapsed = time.perf_counter() - started
            connection.close()
            rows.append({"label": label, "claims_per_s": claimed / elapsed,
                         "ms_per_claim_and_release": float(np.median(latencies) * 1000)})  # fmt: skip
    return rows


# --- pgbench -------------------------------------------------------------------------------------------

PG_SCHEMA = """
CREATE TABLE tasks (id integer PRIMARY KEY, project_id integer, kind varchar(8), state varchar(12),
                    priority float, created_at timestamp, holder_id integer, lease_id varchar(36),
                    lease_expires_at timestamp);
CREATE INDEX ix_tasks_queue ON tasks (project_id, kind, state, priority DESC, created_at, id);
INSERT INTO tasks SELECT i, 1, 'annotate', 'queued', 0, now() + i * interval '1 ms' FROM generate_series(1, 2000) i;
CREATE TABLE audit_head (id integer PRIMARY KEY, seq bigint);
INSERT INTO audit_head VALUES (1, 0);
"""

PG_CLAIM = """\\set uid random(1, 64)
BEGIN;
UPDATE tasks SET state = 'leased', holder_id = :uid, lease_id = md5(random()::text),
       lease_expires_at = now() + interval '300 s'
 WHERE id = (SELECT id FROM tasks WHERE project_id = 1 AND kind = 'annotate' AND state = 'queued'
             ORDER BY priority DESC, created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED)
 RETURNING id AS task \\gset
{audit}COMMIT;
BEGIN;
UPDATE tasks SET state = 'queued', holder_id = NULL, lease_id = NULL, lease_expires_at = NULL WHERE id = :task;
{audit}COMMIT;
"""


def pgbench(cluster, seconds: float, clients: int = 32) -> list[dict]:
    """pgbench's claims/s (one claim and its release per script) and the p99 of a script."""
    bin_dir = Path(os.environ.get("MEDANNOT_PG_BIN", "/usr/lib/postgresql/15/bin"))
    rows = []
    for label, audit in (
        ("pgbench, SKIP LOCKED claim + release", ""),
        ("pgbench, the same with one global audit head row updated per transaction",
         "UPDATE audit_head SET seq = seq + 1 WHERE id = 1;\n"),
    ):  # fmt: skip
        url = cluster.create_database()
        name = url.rsplit("/", 1)[1]
        connect = ["-h", "127.0.0.1", "-p", str(cluster.port), "-U", cluster.user]
        subprocess.run([str(bin_dir / "psql"), *connect, "-q", "-d", name, "-c", PG_SCHEMA], check=True,
                       capture_output=True)  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="medannot-pgbench-") as folder:
            script = Path(folder) / "claim.sql"
            script.write_text(PG_CLAIM.format(audit=audit))
            log = str(Path(folder) / "log")
            command = [str(bin_dir / "pgbench"), *connect, "-n", "-c", str(clients), "-j", "2", "-T",
                       str(int(seconds)), "-f", str(script), "-l", "--log-prefix", log, name]  # fmt: skip
            result = subprocess.run(command, capture_output=True, text=True, cwd=folder, timeout=seconds + 120)
            if result.returncode != 0:
                raise RuntimeError(f"pgbench failed: {result.stderr[-2000:]}")
            latencies = []
            for log in Path(folder).glob("log*"):
                latencies += [int(line.split()[2]) for line in log.read_text().splitlines() if line.strip()]
            tps = next(float(line.split("=")[1].split()[0]) for line in result.stdout.splitlines()
                       if line.startswith("tps"))  # fmt: skip
        rows.append({"label": label, "claims_per_s": tps, "p50_ms": float(np.percentile(latencies, 50)) / 1000,
                     "p99_ms": float(np.percentile(latencies, 99)) / 1000, "clients": clients})  # fmt: skip
    return rows
