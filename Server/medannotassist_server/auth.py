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
from sqlalchemy import and_, bindparam, select
from sqlalchemy.orm import Session

from .errors import ApiError
from .models import ADMIN, ROLES, ApiToken, Membership, Project, User, utcnow
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
        if not rows:
            raise ApiError(401, "invalid_token", "the API token is not valid")
        first = rows[0]
        if first.revoked_at is not None:
            raise ApiError(401, "token_revoked", "the API token was revoked")
        if first.expires_at is not None and first.expires_at <= utcnow():
            raise ApiError(401, "token_expired", f"the API token expired at {first.expires_at.isoformat()}Z")
        caller = Caller(first.user_id, first.name, first.is_site_admin, first.id)
        roles = frozenset(row.role for row in rows if row.role is not None)
        if not (roles or (caller.is_site_admin and connection.execute(_PROJECT_EXISTS, params).first())):
            raise ApiError(404, "project_not_found", f"no project {project_id} (or you are not a member of it)")
    return ProjectAccess(caller, project_id, roles)


Access = Annotated[ProjectAccess, Depends(access)]


def check_role(role: str) -> str:
    if role not in ROLES:
        raise ApiError(422, "invalid_role", f"role must be one of {', '.join(ROLES)}, got {role!r}")
    return role


def expires_text(when: datetime | None) -> str | None:
    return None if when is None else when.isoformat() + "Z"
