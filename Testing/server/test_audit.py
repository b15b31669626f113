"""The audit chain names the first modified or deleted row, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from medannotassist_server import audit
from medannotassist_server.db import Database, migrate

from .conftest import BACKENDS


@pytest.fixture(params=BACKENDS)
def database(request, database_for, tmp_path):
    url = database_for(request.param) or f"sqlite:///{tmp_path / 'queue.sqlite3'}"
    migrate(url)
    database = Database(url)
    for index in range(1, 11):
        with database.writing() as session:
            audit.record(session, "alice", "case.create", "case", index, None, {"name": f"case {index}"}, 1)
    yield database
    database.dispose()


def _verify(database) -> audit.AuditVerdict:
    with database.reading() as session:
        return audit.verify(session)


def _sql(database, statement: str) -> None:
    with database.engine.begin() as connection:
        connection.execute(text(statement))


def test_intact_chain_verifies(database):
    verdict = _verify(database)
    assert verdict.ok and verdict.rows == 10


def test_a_deleted_row_is_named(database):
    _sql(database, "DELETE FROM audit_events WHERE seq = 4")
    verdict = _verify(database)
    assert not verdict.ok and verdict.bad_seq == 4 and "audit row 4 is missing" in verdict.message


def test_a_deleted_last_row_is_seen_through_the_head(database):
    _sql(database, "DELETE FROM audit_events WHERE seq = 10")
    verdict = _verify(database)
    assert not verdict.ok and "rows deleted" in verdict.message


def test_a_modified_row_is_named(database):
    _sql(database, 'UPDATE audit_events SET after_json = \'{"name":"forged"}\' WHERE seq = 6')
    verdict = _verify(database)
    assert not verdict.ok and verdict.bad_seq == 6 and "modified" in verdict.message


def test_a_rehashed_row_breaks_the_next_link(database):
    """Rewriting a row and its own hash still breaks the chain at the next row."""
    with database.reading() as session:
        row = session.get(audit.AuditEvent, 3)
        row.actor = "mallory"
        forged = audit.row_hash(row)
    _sql(database, f"UPDATE audit_events SET actor = 'mallory', hash = '{forged}' WHERE seq = 3")
    verdict = _verify(database)
    assert not verdict.ok and verdict.bad_seq == 4
