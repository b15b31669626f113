"""The Alembic migrations build exactly the models' schema, on SQLite and on PostgreSQL, and are idempotent."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

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
            assert MigrationContext.configure(connection).get_current_revision() == "0006"
            tables = set(inspect(connection).get_table_names())
    finally:
        engine.dispose()
    assert set(Base.metadata.tables) <= tables


@pytest.mark.parametrize("backend", BACKENDS)
def test_0003_remembers_readers_and_project_images_of_existing_rows(backend, database_for, tmp_path):
    """An upgraded server keeps existing readers blind and existing projects' images usable."""
    from alembic import command

    from medannotassist_server.db import alembic_config

    url = database_for(backend) or f"sqlite:///{tmp_path / 'queue.sqlite3'}"
    command.upgrade(alembic_config(url), "0001")
    now, a, b = "2026-01-01 00:00:00", "a" * 64, "b" * 64
    rows = [
        "INSERT INTO users (id, name, is_site_admin, created_at) VALUES (1, 'holder', false, :now), "
        "(2, 'submitter', false, :now), (3, 'reviewer', false, :now), (4, 'released', false, :now)",
        "INSERT INTO projects (id, name, protocol_id, protocol_version, protocol_checksum, protocol_json, "
        "readers_per_case, review_enabled, created_by, created_at) VALUES "
        "(1, 'p1', 'x', '1', 'c', '{}', 2, true, 1, :now), (2, 'p2', 'x', '1', 'c', '{}', 1, true, 1, :now)",
        f"INSERT INTO images (sha256, suffix, size_bytes, geometry_json, created_at) VALUES "
        f"('{a}', '.nrrd', 1, '{{}}', :now), ('{b}', '.nrrd', 1, '{{}}', :now)",
        f"INSERT INTO cases (id, project_id, name, image_sha256, priority, state, round, created_at) VALUES "
        f"(1, 1, 'c1', '{a}', 0, 'review', 1, :now), (2, 2, 'c2', '{a}', 0, 'annotating', 1, :now), "
        f"(3, 1, 'c3', NULL, 0, 'annotating', 1, :now)",
        "INSERT INTO tasks (id, project_id, case_id, kind, state, priority, round, holder_id, assignee_id, "
        "created_at) VALUES (1, 1, 1, 'annotate', 'leased', 0, 1, 1, NULL, :now), "
        "(2, 1, 1, 'annotate', 'submitted', 0, 1, 2, 2, :now), (3, 1, 1, 'review', 'leased', 0, 1, 3, NULL, :now), "
        "(4, 1, 3, 'annotate', 'queued', 0, 1, NULL, NULL, :now)",
        "INSERT INTO submissions (id, project_id, case_id, task_id, reader_id, round, version, sha256, "
        "size_bytes, metadata_json, request_sha256, response_json, created_at) VALUES "
        f"(1, 1, 1, 2, 2, 1, 1, '{b}', 1, '{{}}', 'r', '{{}}', :now)",
    ]
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            for statement in rows:
                connection.execute(text(statement), {"now": now})
        command.upgrade(alembic_config(url), "0003")
        with engine.connect() as connection:
            readers = set(connection.execute(text("SELECT user_id, case_id FROM case_readers")).all())
            images = set(connection.execute(text("SELECT project_id, image_sha256 FROM project_images")).all())
    finally:
        engine.dispose()
    assert readers == {(1, 1), (2, 1)}  # not the reviewer; a reader who released before the upgrade is unknown
    assert images == {(1, a), (2, a)}  # b was never a case's image: upload it again to use it
