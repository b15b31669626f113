"""What ``medannot admin`` does, on the database directly (no server needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import or_, select

from . import audit
from .accounts import create_user, grant, project_named, revoke_tokens, user_named
from .audit import AuditChain, AuditVerdict, Checkpoint, bind_key, checkpoint_now, verify
from .auth import issue_token, token_hash
from .db import Database, migrate
from .models import ApiToken, User, utcnow
from .settings import Settings, private_data_dir

CLI = "cli"


def _database(settings: Settings) -> Database:
    """Migrated, with the audit key bound (``AuditKeyError`` if it is missing or not the chain's)."""
    private_data_dir(settings)
    migrate(settings.url)
    database = Database(settings.url, AuditChain.from_settings(settings))
    try:
        bind_key(database)
    except BaseException:
        database.dispose()
        raise
    return database


def add_user(settings: Settings, name: str, email: str | None, site_admin: bool, expires_in_s: float | None) -> str:
    database = _database(settings)
    try:
        with database.writing() as session:
            _user, token = create_user(session, CLI, name, email, site_admin, "cli", expires_in_s)
        return token
    finally:
        database.dispose()


def keep_tokens(settings: Settings, users: dict[str, bool], known: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """For each user name (``users``: name -> site admin), the ``known`` token if it is still valid, else a new
    one, the user made if missing (``medannot run``'s demo accounts); (tokens by name, names given a new token)."""
    database = _database(settings)
    tokens, renewed = {}, []
    try:
        with database.writing() as session:
            for name, site_admin in users.items():
                user = session.execute(select(User).where(User.name == name)).scalar_one_or_none()
                if user is None:
                    tokens[name] = create_user(session, CLI, name, None, site_admin, "demo")[1]
                    renewed.append(name)
                    continue
                valid = select(ApiToken.id).where(
                    ApiToken.user_id == user.id,
                    ApiToken.token_hash == token_hash(known.get(name, "")),
                    ApiToken.revoked_at.is_(None),
                    or_(ApiToken.expires_at.is_(None), ApiToken.expires_at > utcnow()),
                )
                if name in known and session.execute(valid).first():
                    tokens[name] = known[name]
                    continue
                tokens[name], row = issue_token(session, user, "demo")
                audit.record(session, CLI, "token.create", "user", user.id, None, {"token_id": row.id}, None)
                renewed.append(name)
        return tokens, renewed
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


def verify_audit(
    settings: Settings, anchors: Sequence[Path] = (), export: bool = False
) -> tuple[AuditVerdict, list[Checkpoint]]:
    """Verify the chains against the checkpoint file and ``anchors``; ``export``: then sign a checkpoint of
    each verified head (appended to the checkpoint file, returned to be kept elsewhere)."""
    database = _database(settings)
    try:
        if export:
            return checkpoint_now(database, anchors)
        with database.reading() as session:
            return verify(session, database.chain, anchors), []
    finally:
        database.dispose()
