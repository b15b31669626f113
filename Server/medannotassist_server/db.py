"""The database: one engine per process, short read and write transactions, migrations to head.

SQLite runs in WAL mode with ``synchronous=FULL`` (an acknowledged commit survives a crash, even of the
machine) and every write transaction starts with ``BEGIN IMMEDIATE``: the write lock is taken before the
first read, so two writers, in threads or processes, never both read a free lease and both take it. The
writers of one process also queue for its one write connection before ``BEGIN IMMEDIATE``, and the
processes on one file take turns on a ``flock`` of ``<database>.writers.lock``: SQLite's busy handler waits
by polling with growing sleeps, which under load lets some writers starve for seconds, while these hand
the database to the waiting writers in turn.
PostgreSQL runs at READ COMMITTED; claims lock their row with ``FOR UPDATE SKIP LOCKED`` (see ``claims``).
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session, sessionmaker

from . import audit

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
BUSY_TIMEOUT_MS = 30_000
# PostgreSQL advisory lock key that serializes migrations of replicas starting together
MIGRATION_LOCK_KEY = 7_420_001


def make_engine(url: str, writers: bool = False) -> Engine:
    """``writers``: SQLite's engine for write transactions, one connection: SQLite has one writer at a time
    anyway, and the pool's queue is fairer than SQLite's busy handler (waiting as long as it would)."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
            pool_size=1 if writers else 32,
            max_overflow=0 if writers else 32,
            pool_timeout=BUSY_TIMEOUT_MS / 1000 if writers else 60,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):
            # SQLAlchemy, not sqlite3, emits BEGIN: sqlite3's implicit transactions cannot be IMMEDIATE
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(connection):
            immediate = connection.get_execution_options().get("sqlite_immediate", False)
            connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        if writers and engine.url.database not in (None, "", ":memory:"):
            _writers_take_turns(engine, Path(engine.url.database + ".writers.lock"))
        return engine
    return create_engine(url, pool_size=16, max_overflow=16, pool_pre_ping=True, pool_timeout=60)


def _writers_take_turns(engine: Engine, lock_path: Path) -> None:
    """The write connection of each process holds an exclusive ``flock`` on a file next to the database
    while checked out: the processes on one SQLite file take turns, each woken by the kernel as the last
    one lets go, instead of polling in SQLite's busy handler (sleeps of up to 100 ms: p99 60 ms with two
    server processes, bench/queue.py). SQLite's own lock still guards writers that do not take it."""

    @event.listens_for(engine, "connect")
    def _open(_dbapi_connection, record):
        record.info["writers_lock"] = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)

    @event.listens_for(engine, "checkout")
    def _take(_dbapi_connection, record, _proxy):
        fcntl.flock(record.info["writers_lock"], fcntl.LOCK_EX)

    @event.listens_for(engine, "checkin")
    def _let_go(_dbapi_connection, record):
        if "writers_lock" in record.info:
            fcntl.flock(record.info["writers_lock"], fcntl.LOCK_UN)

    @event.listens_for(engine, "close")
    def _close(_dbapi_connection, record):
        descriptor = record.info.pop("writers_lock", None)
        if descriptor is not None:
            os.close(descriptor)


class Database:
    """Sessions for one request step: ``reading()`` for a consistent snapshot, ``writing()`` for a change
    (committed, with its audit events, when the block ends without an exception). ``chain``: the audit
    key and checkpoints (``AuditChain.from_settings``); without it, a change with audit events fails."""

    def __init__(self, url: str, chain: audit.AuditChain | None = None):
        self.url = url
        self.chain = chain
        self.engine = make_engine(url)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        self._write_engine = make_engine(url, writers=True) if self.is_sqlite else self.engine
        # connections whose transactions begin IMMEDIATE on SQLite (one per process: see ``make_engine``)
        self.write_engine = self._write_engine.execution_options(sqlite_immediate=True)
        self._write = sessionmaker(self.write_engine, expire_on_commit=False)

    @contextmanager
    def reading(self) -> Iterator[Session]:
        with self._read() as session, session.begin():
            yield session

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """A plain connection for a hot path's read (one or two Core statements, no ORM session)."""
        with self.engine.connect() as connection:
            yield connection

    @contextmanager
    def writing(self) -> Iterator[Session]:
        try:
            with self._write() as session, session.begin():
                yield session
                heads = audit.write_pending(session, self.chain)
        except PoolTimeoutError:
            raise busy() from None
        if heads:
            # committed: only now may a checkpoint say these rows exist
            self.chain.committed(heads)

    def dispose(self) -> None:
        if self.chain is not None:
            self.chain.flush()
        self.engine.dispose()
        self._write_engine.dispose()


def busy() -> OperationalError:
    """SQLite's writers' queue did not move for as long as the busy timeout: 503, as a busy database."""
    return OperationalError("BEGIN IMMEDIATE", None, sqlite3.OperationalError("database is locked"))


def alembic_config(url: str):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


@contextmanager
def _migration_lock(url: str, engine: Engine):
    """One migrator at a time: an advisory lock on PostgreSQL, a file lock next to the SQLite file."""
    if engine.dialect.name == "sqlite":
        database = engine.url.database
        lock_path = Path(database + ".migrate.lock") if database and database != ":memory:" else None
        if lock_path is None:
            yield
            return
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        connection.commit()
        try:
            yield
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
            connection.commit()


def migrate(url: str) -> None:
    """Upgrade the schema to the newest migration (idempotent; safe with replicas starting together)."""
    from alembic import command

    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = make_engine(url)
    try:
        with _migration_lock(url, engine):
            command.upgrade(alembic_config(url), "head")
    finally:
        engine.dispose()


def insert_new(model, postgres: bool):
    """``INSERT … ON CONFLICT DO NOTHING`` for ``model``: a row that is already there stays, no error."""
    from sqlalchemy.dialects import postgresql, sqlite

    return (postgresql.insert if postgres else sqlite.insert)(model).on_conflict_do_nothing()
