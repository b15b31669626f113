"""Core statements run as plain driver SQL on the hot path: each is compiled once per dialect into the
driver's own SQL and parameter style and executed on the DBAPI cursor, without SQLAlchemy's execution
machinery (which costs more than the statement: about 60 µs against 10 for a claim's indexed SELECT on
SQLite). The SQL is the one SQLAlchemy would send; only the values are passed as the driver wants them."""

from __future__ import annotations

from datetime import datetime

SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy stores DateTime in SQLite: compared as text, so alike


class DriverStatement:
    """One statement, compiled for one dialect: ``execute(cursor, params)`` with the bound names as keys
    (the statement's own constants are filled in)."""

    def __init__(self, statement, dialect):
        compiled = statement.compile(dialect=dialect)
        self.sql = str(compiled)
        self.constants = {name: bind.value for bind, name in compiled.bind_names.items() if not bind.required}
        self.names = list(compiled.positiontup) if compiled.positional else None
        self.sqlite = dialect.name == "sqlite"

    def execute(self, cursor, params: dict):
        values = {**self.constants, **params}
        if self.names is None:
            cursor.execute(self.sql, values)
        else:
            cursor.execute(self.sql, [_sqlite(values[name]) for name in self.names])
        return cursor


def _sqlite(value):
    return value.strftime(SQLITE_TIME) if isinstance(value, datetime) else value


def read_time(value) -> datetime | None:
    """A DateTime column as read through the driver: SQLite gives text, PostgreSQL a datetime."""
    return datetime.fromisoformat(value) if isinstance(value, str) else value


class Statements:
    """The driver form of Core statements for one dialect, compiled on first use."""

    def __init__(self, dialect):
        self.dialect = dialect
        self._compiled: dict[int, tuple[object, DriverStatement]] = {}

    def __call__(self, statement) -> DriverStatement:
        found = self._compiled.get(id(statement))
        if found is None or found[0] is not statement:
            found = (statement, DriverStatement(statement, self.dialect))
            self._compiled[id(statement)] = found
        return found[1]
