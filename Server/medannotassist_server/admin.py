"""What ``medannot admin`` does, on the database directly (no server needed)."""

from __future__ import annotations

from .accounts import create_user, grant, project_named, revoke_tokens, user_named
from .audit import AuditVerdict, verify
from .db import Database, migrate
from .settings import Settings, private_data_dir

CLI = "cli"


def _database(settings: Settings) -> Database:
    private_data_dir(settings)
    migrate(settings.url)
    return Database(settings.url)


def add_user(settings: Settings, name: str, email: str | None, site_admin: bool, expires_in_s: float | None) -> str:
    database = _database(settings)
    try:
        with database.writing() as session:
            _user, token = create_user(session, CLI, name, email, site_admin, "cli", expires_in_s)
        return token
    finally:
        database.dispose()


def grant_role(settings: Settings, name: str, project: str, role: str) -> list[str]:
    database = _database(settings)
    try:
        with database.writing() as session:
            return grant(session, CLI, project_named(session, project), user_named(session, name), role)
    finally:
        database.dispose()


def revoke(settings: Settings, name: str) -> int:
    database = _database(settings)
    try:
        with database.writing() as session:
            return revoke_tokens(session, CLI, user_named(session, name))
    finally:
        database.dispose()


def verify_audit(settings: Settings) -> AuditVerdict:
    database = _database(settings)
    try:
        with database.reading() as session:
            return verify(session)
    finally:
        database.dispose()
