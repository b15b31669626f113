"""The audit key and checkpoints in use: many writers append checkpoints in any order, the policy (every N
rows, within T seconds, on shutdown), torn lines, chains made before the key, a replica with another key."""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import threading
import time

import pytest
from alembic import command
from sqlalchemy import text

from medannotassist_server import admin, audit
from medannotassist_server.audit_keys import AuditChain, AuditKeyError, create_key
from medannotassist_server.db import Database, alembic_config, make_engine, migrate
from medannotassist_server.settings import Settings

from .conftest import BACKENDS
from .harness import MEDANNOT
from .postgres import free_port


def _open(url: str, root, every_rows: int = 10_000, every_seconds: float = 10.0, key: str = "audit.key") -> Database:
    migrate(url)
    database = Database(url, AuditChain(root / key, root / "audit-checkpoints.jsonl", every_rows, every_seconds))
    audit.bind_key(database)
    return database


def _url(database_for, backend: str, tmp_path) -> str:
    url = database_for(backend) or f"sqlite:///{tmp_path / 'queue.sqlite3'}"
    migrate(url)
    return url


def _write(database: Database, index: int, events: int = 1) -> None:
    with database.writing() as session:
        for _ in range(events):
            audit.record(session, "alice", "case.create", "case", index, None, {"name": f"case {index}"}, 1)


def _verify(database: Database, anchors=()) -> audit.AuditVerdict:
    with database.reading() as session:
        return audit.verify(session, database.chain, anchors)


def _checkpoints(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("backend", BACKENDS)
def test_checkpoints_of_many_writers_verify_in_any_order(backend, database_for, tmp_path):
    """Two 'processes' (each its own engine and checkpoints), eight threads each, a checkpoint per commit."""
    url = _url(database_for, backend, tmp_path)
    processes = [_open(url, tmp_path, every_rows=1) for _ in range(2)]
    barrier = threading.Barrier(16)

    def writer(database: Database, worker: int) -> None:
        barrier.wait()
        for index in range(15):
            _write(database, worker * 100 + index, events=1 + index % 3)

    threads = [threading.Thread(target=writer, args=(processes[n % 2], n)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for database in processes:
        database.dispose()
    path = tmp_path / "audit-checkpoints.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    assert len(lines) > 100 and all(line.count("{") == 1 for line in lines)  # whole lines, never mixed
    random.Random(7).shuffle(lines)
    path.write_text("".join(lines))
    database = Database(url, processes[0].chain)
    try:
        verdict = _verify(database)
        assert verdict.ok, verdict.problems
        assert verdict.rows == 16 * (5 * 1 + 5 * 2 + 5 * 3) and verdict.checkpoints == len(lines)
    finally:
        database.dispose()


def test_a_checkpoint_every_n_rows_within_t_seconds_and_on_shutdown(tmp_path):
    database = _open(f"sqlite:///{tmp_path / 'queue.sqlite3'}", tmp_path, every_rows=5, every_seconds=3600)
    path = tmp_path / "audit-checkpoints.jsonl"
    for index in range(12):
        _write(database, index)
    # the seal at binding, the first commit of the process, then one every 5 rows
    assert [(c["seq"], c["seal"]) for c in _checkpoints(path)] == [(0, True), (1, False), (6, False), (11, False)]
    database.chain.flush()  # on demand
    database.chain.every_seconds = 0.3
    _write(database, 12)
    time.sleep(1.5)
    assert [c["seq"] for c in _checkpoints(path)][-2:] == [12, 13]  # row 13 within the time limit, no new commit
    _write(database, 13)
    database.dispose()  # shutdown: the newest rows get their checkpoint at once
    assert [c["seq"] for c in _checkpoints(path)] == [0, 1, 6, 11, 12, 13, 14]
    assert _verify(database).ok


def test_a_torn_last_line_is_skipped_and_a_broken_line_is_named(tmp_path):
    database = _open(f"sqlite:///{tmp_path / 'queue.sqlite3'}", tmp_path)
    _write(database, 1)
    database.dispose()
    path = tmp_path / "audit-checkpoints.jsonl"
    whole = path.read_text()
    path.write_text(whole + whole.splitlines()[-1][:40])  # a crash in the middle of a write
    verdict = _verify(database)
    assert verdict.ok and f"the last line of {path} is torn" in verdict.message, verdict.problems
    path.write_text(whole.splitlines()[0][:40] + "\n" + whole)
    verdict = _verify(database)
    assert not verdict.ok and verdict.message.startswith(f"{path} line 1 is not a checkpoint (not JSON")


def _sha256_chain(count: int) -> list[dict]:
    """Rows as the server wrote them before revision 0004: SHA-256 without a key."""
    rows = [
        {
            "seq": seq,
            "at": "2026-11-01T10:00:00.000000Z",
            "actor": "alice",
            "action": "case.create",
            "entity": "case",
            "entity_id": str(seq),
            "project_id": 1,
            "before_json": "{}",
            "after_json": json.dumps({"name": f"case {seq}"}, separators=(",", ":")),
        }
        for seq in range(1, count + 1)
    ]
    return _rehash(rows)


def _rehash(rows: list[dict]) -> list[dict]:
    previous = "0" * 64
    for row in rows:
        row["prev_hash"] = previous
        fields = [row[name] for name in ("seq", "at", "actor", "action", "entity", "entity_id", "project_id")]
        fields += [row["before_json"], row["after_json"], row["prev_hash"]]
        canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        row["hash"] = previous = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    return rows


def _execute(url: str, statement: str, rows) -> None:
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(text(statement), rows)
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_chain_made_before_the_key_is_sealed_and_stays_verifiable(backend, database_for, tmp_path):
    url = database_for(backend) or f"sqlite:///{tmp_path / 'queue.sqlite3'}"
    command.upgrade(alembic_config(url), "0001")
    rows = _sha256_chain(5)
    columns = ", ".join(rows[0])
    _execute(url, f"INSERT INTO audit_events ({columns}) VALUES ({', '.join(':' + name for name in rows[0])})", rows)
    _execute(url, "UPDATE audit_head SET seq = :seq, hash = :hash", {"seq": 5, "hash": rows[-1]["hash"]})

    migrate(url)  # to 0004: rows 1-5 stay as they are
    database = _open(url, tmp_path)
    _write(database, 6, events=3)
    database.dispose()
    seal = _checkpoints(tmp_path / "audit-checkpoints.jsonl")[0]
    assert (seal["seq"], seal["head"], seal["keyed_from"], seal["seal"]) == (5, rows[-1]["hash"], 6, True)
    verdict = _verify(database)
    assert verdict.ok and verdict.rows == 8, verdict.problems
    assert "rows 1 to 5 were made before the chain was keyed (SHA-256, sealed)" in verdict.message

    # the unkeyed rows are SHA-256 only, so anyone can re-hash them: the seal shows it
    forged = _sha256_chain(5)
    for row in forged[1:]:
        row["actor"] = "mallory"
    _rehash(forged)
    statement = "UPDATE audit_events SET actor = :actor, prev_hash = :prev_hash, hash = :hash WHERE seq = :seq"
    _execute(url, statement, forged)
    _execute(url, "UPDATE audit_events SET prev_hash = :hash WHERE seq = 6", {"hash": forged[-1]["hash"]})
    verdict = _verify(database)
    assert not verdict.ok and verdict.message.startswith("audit row 5 does not match"), verdict.problems


def test_a_replica_with_another_key_cannot_append(tmp_path):
    url = f"sqlite:///{tmp_path / 'queue.sqlite3'}"
    first = _open(url, tmp_path)
    _write(first, 1)
    other = Database(url, AuditChain(tmp_path / "other.key", tmp_path / "audit-checkpoints.jsonl"))
    with pytest.raises(AuditKeyError, match="no audit key at .*other.key, but the audit chain was made with key id"):
        audit.bind_key(other)  # a bound chain never gets a new key
    create_key(tmp_path / "other.key")
    with pytest.raises(AuditKeyError, match="is not the key this audit chain was made with"):
        audit.bind_key(other)
    with pytest.raises(AuditKeyError, match="is not the key this audit chain was made with"):
        _write(other, 2)
    for database in (first, other):
        database.dispose()
    assert _verify(first).ok


def test_a_database_without_the_key_refuses_audited_writes(tmp_path):
    url = f"sqlite:///{tmp_path / 'queue.sqlite3'}"
    migrate(url)
    database = Database(url)
    with pytest.raises(AuditKeyError, match="audit events need the audit key"):
        _write(database, 1)
    database.dispose()


def _head_seq(queue) -> int:
    engine = make_engine(queue.database_url or f"sqlite:///{queue.data_dir / 'queue.sqlite3'}")
    try:
        with engine.connect() as connection:
            return connection.execute(text("SELECT seq FROM audit_head")).scalar_one()
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_server_checkpoints_on_shutdown_and_a_killed_one_leaves_a_chain_that_verifies(
    backend, start_queue, monkeypatch
):
    monkeypatch.setenv("MEDANNOT_AUDIT_CHECKPOINT_SECONDS", "3600")  # only the first commit, rows and shutdown
    queue = start_queue(backend)
    path = queue.data_dir / "audit-checkpoints.jsonl"
    assert (queue.data_dir / "audit.key").stat().st_mode & 0o777 == 0o600 and path.stat().st_mode & 0o777 == 0o600
    for index in range(3):
        queue.admin.new_user(f"before-kill-{index}")
    queue.server.kill()  # no shutdown code runs: the last two rows have no checkpoint
    assert max(checkpoint["seq"] for checkpoint in _checkpoints(path)) == _head_seq(queue) - 2
    queue.server.start()
    assert queue.admin.ok(queue.admin.get("/api/v1/audit/verify"))["ok"] is True
    for index in range(2):
        queue.admin.new_user(f"after-restart-{index}")
    queue.server.stop()
    assert max(checkpoint["seq"] for checkpoint in _checkpoints(path)) == _head_seq(queue)


def test_a_deleted_head_row_is_named(tmp_path):
    database = _open(f"sqlite:///{tmp_path / 'queue.sqlite3'}", tmp_path)
    _write(database, 1)
    _execute(database.url, "DELETE FROM audit_head", {})
    audit.bind_key(database)  # a restart does not fail on it: verify names it
    verdict = _verify(database)
    assert not verdict.ok and verdict.message == "the audit_head row is missing: deleted in the database"
    database.dispose()


def test_a_server_without_the_chains_key_refuses_to_start(tmp_path):
    settings = Settings(data_dir=tmp_path / "data")
    admin.add_user(settings, "alice", None, True, None)
    (settings.data_dir / "audit.key").unlink()
    command_line = [MEDANNOT, "serve", "--data-dir", str(settings.data_dir), "--port", str(free_port())]
    result = subprocess.run(command_line, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert f"error: no audit key at {settings.data_dir / 'audit.key'}, but the audit chain was made with key id" in (
        result.stderr
    )
    assert not (settings.data_dir / "audit.key").exists()
