"""Audit chains per project: a project's writes lock only its own chain's head, revision 0006 carries the
existing chain over unchanged, and every way of rewriting a project's chain is named by verify."""

from __future__ import annotations

import json
import threading
import time

import pytest
from alembic import command
from sqlalchemy import text

from medannotassist_server import audit
from medannotassist_server.audit_keys import AuditChain
from medannotassist_server.db import Database, alembic_config, make_engine, migrate

from .conftest import BACKENDS

GENESIS = "0" * 64


def _open(url: str, root, every_rows: int = 10_000) -> Database:
    migrate(url)
    database = Database(url, AuditChain(root / "audit.key", root / "audit-checkpoints.jsonl", every_rows, 3600))
    audit.bind_key(database)
    return database


def _write(database: Database, project_id: int | None, index: int) -> None:
    with database.writing() as session:
        audit.record(session, "alice", "case.create", "case", index, None, {"name": f"case {index}"}, project_id)


def _verify(database: Database, anchors=()) -> audit.AuditVerdict:
    with database.reading() as session:
        return audit.verify(session, database.chain, anchors)


def _sql(url: str, statement: str, **params) -> list:
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            result = connection.execute(text(statement), params)
            return result.all() if result.returns_rows else []
    finally:
        engine.dispose()


@pytest.fixture(params=BACKENDS)
def url(request, database_for, tmp_path) -> str:
    return database_for(request.param) or f"sqlite:///{tmp_path / 'queue.sqlite3'}"


def test_each_project_has_its_own_chain_and_verify_names_a_rewritten_one(url, tmp_path):
    database = _open(url, tmp_path, every_rows=1)
    for index in range(4):
        _write(database, None, index)  # server-wide: users, tokens
        _write(database, 7, index)
        _write(database, 9, index)
    chains = _sql(url, "SELECT chain, MIN(seq), MAX(seq), COUNT(*) FROM audit_events GROUP BY chain ORDER BY chain")
    assert [tuple(row) for row in chains] == [(0, 1, 4, 4), (7, 1, 4, 4), (9, 1, 4, 4)]
    verdict = _verify(database)
    assert verdict.ok and verdict.rows == 12 and "2 project chains" in verdict.message, verdict.problems
    lines = [json.loads(line) for line in (tmp_path / "audit-checkpoints.jsonl").read_text().splitlines()]
    assert {line.get("chain", 0) for line in lines} == {0, 7, 9}
    assert all("chain" not in line for line in lines if line["seal"])  # chain 0's lines read as before

    # a row of project 7 edited: named with its project; chain 0 and project 9 still walk
    _sql(url, "UPDATE audit_events SET actor = 'mallory' WHERE chain = 7 AND seq = 2")
    verdict = _verify(database)
    assert not verdict.ok and verdict.problems == [
        "project 7: audit row 2: modified (its hash does not match its content)"
    ]
    assert (verdict.bad_chain, verdict.bad_seq) == (7, 2)
    _sql(url, "UPDATE audit_events SET actor = 'alice' WHERE chain = 7 AND seq = 2")
    assert _verify(database).ok

    # project 9's tail cut and its head moved back: its checkpoints show it
    last = _sql(url, "SELECT hash FROM audit_events WHERE chain = 9 AND seq = 2")[0][0]
    _sql(url, "DELETE FROM audit_events WHERE chain = 9 AND seq > 2")
    _sql(url, "UPDATE audit_project_heads SET seq = 2, hash = :hash WHERE project_id = 9", hash=last)
    verdict = _verify(database)
    assert not verdict.ok and verdict.problems[0].startswith(
        "project 9: rows 3 to 4 were deleted from the end of the chain"
    ), verdict.problems

    # project 9's whole chain deleted, head row included
    _sql(url, "DELETE FROM audit_events WHERE chain = 9")
    _sql(url, "DELETE FROM audit_project_heads WHERE project_id = 9")
    verdict = _verify(database)
    assert not verdict.ok and verdict.problems[0].startswith(
        "project 9's audit chain is gone (its head row was deleted)"
    )

    # a row moved into another project's chain (its chain column changed, the hash left alone)
    _sql(url, "UPDATE audit_events SET chain = 11 WHERE chain = 7 AND seq = 4")
    verdict = _verify(database)
    assert "1 audit rows of project 11's chain have no head row: it was deleted" in verdict.problems, verdict.problems
    database.dispose()


def test_an_exported_checkpoint_covers_every_project_chain(url, tmp_path):
    database = _open(url, tmp_path)
    for index in range(3):
        _write(database, 5, index)
        _write(database, None, index)
    verdict, exported = audit.checkpoint_now(database)
    assert verdict.ok and [(c.chain, c.seq) for c in exported] == [(0, 3), (5, 3)]
    anchor = tmp_path / "kept-elsewhere.jsonl"
    anchor.write_text("".join(checkpoint.line() for checkpoint in exported))
    # the project's tail cut, the head moved back, and every checkpoint of its later rows removed from the file
    first = _sql(url, "SELECT hash FROM audit_events WHERE chain = 5 AND seq = 1")[0][0]
    _sql(url, "DELETE FROM audit_events WHERE chain = 5 AND seq > 1")
    _sql(url, "UPDATE audit_project_heads SET seq = 1, hash = :hash WHERE project_id = 5", hash=first)
    path = tmp_path / "audit-checkpoints.jsonl"
    kept = [line for line in path.read_text().splitlines(keepends=True) if json.loads(line).get("chain") != 5]
    path.write_text("".join(kept))
    assert _verify(database).ok  # the file alone cannot show it
    verdict = _verify(database, [anchor])
    assert not verdict.ok
    assert verdict.problems[0].startswith(f"project 5: rows 2 to 3 were deleted from the end of the chain: {anchor}")
    assert any("the exported checkpoint of row 3 of project 5" in problem for problem in verdict.problems)
    database.dispose()


def _keyed_rows(chain: AuditChain, rows: list[dict], previous: str) -> list[dict]:
    for row in rows:
        row["prev_hash"] = previous
        row["hash"] = previous = chain.row_hash(audit.hashed_text(type("Row", (), row)))
    return rows


def test_0006_carries_the_existing_chain_over(url, tmp_path):
    """A 0005 database with a chain of events of two projects and of none: after the upgrade the chain and
    its checkpoints verify unchanged, and each project continues in a chain of its own, numbered after the
    old rows so that its events, old and new, stay in seq order."""
    command.upgrade(alembic_config(url), "0005")
    _sql(
        url,
        "INSERT INTO users (id, name, is_site_admin, created_at) VALUES (1, 'alice', true, '2026-01-01 00:00:00')",
    )
    for project in (1, 2):
        _sql(
            url,
            "INSERT INTO projects (id, name, protocol_id, protocol_version, protocol_checksum, protocol_json, "
            "readers_per_case, review_enabled, created_by, created_at) VALUES "
            "(:id, :name, 'x', '1', 'c', '{}', 1, true, 1, '2026-01-01 00:00:00')",
            id=project,
            name=f"p{project}",
        )
    chain = AuditChain(tmp_path / "audit.key", tmp_path / "audit-checkpoints.jsonl")
    database = Database(url, chain)
    audit.bind_key(database)  # 0005's key binding and seal (of the empty chain)
    rows = [
        {"seq": seq, "at": "2026-01-01T00:00:00.000000Z", "actor": "alice", "action": "case.create",
         "entity": "case", "entity_id": str(seq), "project_id": project, "before_json": "{}", "after_json": "{}"}
        for seq, project in enumerate([1, 2, None, 1, 2, 1], start=1)
    ]  # fmt: skip
    _keyed_rows(chain, rows, GENESIS)
    columns = ", ".join(rows[0])
    values = ", ".join(":" + name for name in rows[0])
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(text(f"INSERT INTO audit_events ({columns}) VALUES ({values})"), rows)
        connection.execute(text("UPDATE audit_head SET seq = 6, hash = :hash"), {"hash": rows[-1]["hash"]})
    engine.dispose()
    chain.committed([audit.Head(0, 6, rows[-1]["hash"], 1)])  # the checkpoint a 0005 server would have written
    database.dispose()

    database = _open(url, tmp_path)  # migrates to 0006
    verdict = _verify(database)
    assert verdict.ok and verdict.rows == 6, verdict.problems
    heads = _sql(url, "SELECT project_id, base, seq, hash FROM audit_project_heads ORDER BY project_id")
    assert [tuple(row) for row in heads] == [(1, 6, 6, GENESIS), (2, 6, 6, GENESIS)]
    _write(database, 1, 7)
    _write(database, None, 8)
    _write(database, 3, 9)  # a project made after the upgrade starts at 1
    old = _sql(url, "SELECT chain, seq FROM audit_events WHERE project_id = 1 ORDER BY seq")
    assert [tuple(row) for row in old] == [(0, 1), (0, 4), (0, 6), (1, 7)]
    new = _sql(url, "SELECT chain, seq, project_id FROM audit_events WHERE seq > 6 OR chain = 3")
    assert sorted(tuple(row) for row in new) == [(0, 7, None), (1, 7, 1), (3, 1, 3)]
    verdict = _verify(database)
    assert verdict.ok and verdict.rows == 9 and "3 project chains" in verdict.message, verdict.problems
    database.dispose()


def test_one_projects_writes_never_wait_on_anothers(postgres_cluster, tmp_path):
    """PostgreSQL: while a transaction of project 1 holds its chain's head (as a slow commit would), a write
    of project 2 commits at once and one of project 1 waits for it."""
    url = postgres_cluster.create_database()
    database = _open(url, tmp_path)
    _write(database, 1, 0)
    _write(database, 2, 0)
    engine = make_engine(url)
    holder = engine.connect()
    holder.begin()
    holder.execute(text("SELECT seq FROM audit_project_heads WHERE project_id = 1 FOR UPDATE"))
    done: dict[int, float] = {}

    def write(project: int) -> None:
        started = time.monotonic()
        _write(database, project, 1)
        done[project] = time.monotonic() - started

    threads = [threading.Thread(target=write, args=(project,)) for project in (1, 2)]
    for thread in threads:
        thread.start()
    threads[1].join(timeout=10)
    time.sleep(0.5)
    assert 2 in done and done[2] < 2.0, done
    assert 1 not in done  # project 1's write waits for the head
    holder.rollback()
    holder.close()
    threads[0].join(timeout=10)
    assert 1 in done
    engine.dispose()
    assert _verify(database).ok
    database.dispose()
