"""The Alembic migrations build exactly the models' schema, on SQLite and on PostgreSQL, and are idempotent."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from medannotassist_server.db import make_engine, migrate
from medannotassist_server.models import Base

from .conftest import BACKENDS


@pytest.mark.parametrize("backend", BACKENDS)
def test_migrations_match_the_models(backend, database_for, tmp_path):
    url = database_for(backend) or f"sqlite:///{tmp_path / 'queue.sqlite3'}"
    migrate(url)
    migrate(url)  # a second start changes nothing
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
            assert MigrationContext.configure(connection).get_current_revision() == "0003"
            tables = set(inspect(connection).get_table_names())
    finally:
        engine.dispose()
    assert set(Base.metadata.tables) <= tables
