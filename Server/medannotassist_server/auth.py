"""API tokens and the role matrix.

A token is 32 random bytes, shown once; the database keeps only its SHA-256 (a random 256-bit secret
needs no slow hash). Tokens travel only in ``Authorization: Bearer``: never in a URL, so never in an
access log. Project roles are annotator, reviewer and admin; a site admin is admin of every project and
the only one who creates projects and users.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPBearer
from sqlalchemy import and_, bindparam, select, update
from sqlalchemy.orm import Session

from .errors import ApiError
from .models import ADMIN, ROLES, ApiToken, AuthEpoch, Membership, Project, User, utcnow
from .schemas import ProjectId

TOKEN_PREFIX = "mat_"


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def issue_token(
    session: Session, user: User, label: str = "", expires_in_s: float | None = None
) -> tuple[str, ApiToken]:
    token = new_token()
    expires = utcnow() + timedelta(seconds=expires_in_s) if expires_in_s else None
    row = ApiToken(user_id=user.id, token_hash=token_hash(token), label=label, expires_at=expires)
    session.add(row)
    session.flush()
    return token, row


@dataclass(frozen=True)
class Caller:
    """The authenticated user, detached from any session."""

    id: int
    name: str
    is_site_admin: bool
    token_id: int


@dataclass(frozen=True)
class ProjectAccess:
    caller: Caller
    project_id: int
    roles: frozenset[str]

    def has(self, *roles: str) -> bool:
        return self.caller.is_site_admin or ADMIN in self.roles or bool(self.roles.intersection(roles))

    def require(self, *roles: str) -> ProjectAccess:
        if not self.has(*roles):
            wanted = " or ".join(roles + ((ADMIN,) if ADMIN not in roles else ()))
            raise ApiError(403, "forbidden", f"this needs the {wanted} role in project {self.project_id}")
        return self

    @property
    def is_admin(self) -> bool:
        return self.caller.is_site_admin or ADMIN in self.roles


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise ApiError(401, "unauthorized", "an API token is required: Authorization: Bearer <token>")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "unauthorized", "the Authorization header must be 'Bearer <token>'")
    return token


def _caller(session: Session, token: str) -> Caller:
    row = session.execute(
        select(ApiToken, User).join(User, User.id == ApiToken.user_id).where(ApiToken.token_hash == token_hash(token))
    ).first()
    if row is None:
        raise ApiError(401, "invalid_token", "the API token is not valid")
    api_token, user = row
    if api_token.revoked_at is not None:
        raise ApiError(401, "token_revoked", "the API token was revoked")
    if api_token.expires_at is not None and api_token.expires_at <= utcnow():
        raise ApiError(401, "token_expired", f"the API token expired at {api_token.expires_at.isoformat()}Z")
    return Caller(user.id, user.name, user.is_site_admin, api_token.id)


# declares the scheme in the OpenAPI document; the checks below give our own JSON errors
BEARER = Security(HTTPBearer(auto_error=False, description="an API token: Authorization: Bearer <token>"))


def authenticate(request: Request, _scheme=BEARER) -> Caller:
    token = _bearer(request)
    with request.app.state.services.database.reading() as session:
        return _caller(session, token)


CurrentCaller = Annotated[Caller, Depends(authenticate)]


def project_access(session: Session, caller: Caller, project_id: int) -> ProjectAccess:
    """The caller's roles in a project; a project the caller is not in does not exist for them (404)."""
    roles = frozenset(
        session.execute(
            select(Membership.role).where(Membership.project_id == project_id, Membership.user_id == caller.id)
        ).scalars()
    )
    if not (roles or (caller.is_site_admin and session.get(Project, project_id) is not None)):
        raise ApiError(404, "project_not_found", f"no project {project_id} (or you are not a member of it)")
    return ProjectAccess(caller, project_id, roles)


# the token, its user and the user's roles in one project: one statement per request (the hot path)
_ACCESS = (
    select(
        ApiToken.id, ApiToken.revoked_at, ApiToken.expires_at, User.id.label("user_id"), User.name,
        User.is_site_admin, Membership.role,
    )
    .join(User, User.id == ApiToken.user_id)
    .outerjoin(Membership, and_(Membership.user_id == User.id, Membership.project_id == bindparam("project_id")))
    .where(ApiToken.token_hash == bindparam("token_hash"))
)  # fmt: skip
_PROJECT_EXISTS = select(Project.id).where(Project.id == bindparam("project_id"))


def access(request: Request, project_id: ProjectId, _scheme=BEARER) -> ProjectAccess:
    """The caller and their roles in the project of the path: the same checks, in the same order, as
    ``_caller`` then ``project_access``, from one statement on a plain connection (no ORM session)."""
    token = _bearer(request)
    with request.app.state.services.database.connection() as connection:
        params = {"token_hash": token_hash(token), "project_id": project_id}
        rows = connection.execute(_ACCESS, params).all()
        found = access_of(rows, project_id, lambda: connection.execute(_PROJECT_EXISTS, params).first() is not None)
    return checked(*found)


def access_of(rows, project_id: int, project_exists) -> tuple[ProjectAccess, datetime | None]:
    """The caller's access from the rows of ``_ACCESS`` (tuples in its column order), with the token's
    expiry; 401 for an unknown or revoked token, 404 for a project that is not theirs."""
    if not rows:
        raise ApiError(401, "invalid_token", "the API token is not valid")
    token_id, revoked_at, expires_at, user_id, name, is_site_admin, _role = rows[0]
    if revoked_at is not None:
        raise ApiError(401, "token_revoked", "the API token was revoked")
    caller = Caller(user_id, name, bool(is_site_admin), token_id)
    roles = frozenset(row[6] for row in rows if row[6] is not None)
    if not (roles or (caller.is_site_admin and project_exists())):
        raise ApiError(404, "project_not_found", f"no project {project_id} (or you are not a member of it)")
    return ProjectAccess(caller, project_id, roles), expires_at


def checked(found: ProjectAccess, expires_at: datetime | None) -> ProjectAccess:
    """The access, unless its token expired (checked on every use, cached or not)."""
    if expires_at is not None and expires_at <= utcnow():
        raise ApiError(401, "token_expired", f"the API token expired at {expires_at.isoformat()}Z")
    return found


_BUMP_EPOCH = update(AuthEpoch).where(AuthEpoch.id == 1).values(epoch=AuthEpoch.epoch + 1)


def auth_changed(session: Session) -> None:
    """In the transaction of a revocation or a role change: every server process drops the tokens and roles
    it cached (``AccessCache``) before its next claim, heartbeat or release."""
    session.execute(_BUMP_EPOCH)


class AccessCache:
    """Accesses by (token hash, project) that the group-commit writer looked up, trusted while the auth
    epoch it reads in each transaction is the one they were looked up under (a revocation or role change
    raises it in its own transaction: the next transaction after its commit refuses the token), and for
    at most ``max_age_s`` (changes made outside the server, such as an edit in the database)."""

    MAX_ENTRIES = 100_000

    def __init__(self, max_age_s: float = 60.0):
        self.max_age_s = max_age_s
        self.epoch: int | None = None
        self._entries: dict[tuple[str, int], tuple[float, ProjectAccess, datetime | None]] = {}

    def sync(self, epoch: int | None) -> None:
        """The epoch read in this transaction (None: no counter, so nothing is trusted)."""
        if epoch is None or epoch != self.epoch:
            self._entries.clear()
        self.epoch = epoch

    def get(self, key: tuple[str, int], now: float) -> tuple[ProjectAccess, datetime | None] | None:
        entry = self._entries.get(key)
        if entry is None or now - entry[0] > self.max_age_s:
            return None
        return entry[1], entry[2]

    def put(self, key: tuple[str, int], now: float, found: tuple[ProjectAccess, datetime | None]) -> None:
        if self.epoch is None:
            return
        if len(self._entries) >= self.MAX_ENTRIES:
            self._entries.clear()
        self._entries[key] = (now, *found)


Access = Annotated[ProjectAccess, Depends(access)]


def check_role(role: str) -> str:
    if role not in ROLES:
        raise ApiError(422, "invalid_role", f"role must be one of {', '.join(ROLES)}, got {role!r}")
    return role


def expires_text(when: datetime | None) -> str | None:
    return None if when is None else when.isoformat() + "Z"
