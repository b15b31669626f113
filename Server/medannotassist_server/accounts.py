"""Users, tokens and project memberships: shared by the API and ``medannot admin``."""

from __future__ import annotations

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from . import audit
from .auth import auth_changed, check_role, issue_token
from .errors import ApiError
from .models import ApiToken, Membership, Project, User, utcnow


def create_user(
    session: Session,
    actor: str,
    name: str,
    email: str | None = None,
    site_admin: bool = False,
    token_label: str = "",
    token_expires_in_s: float | None = None,
) -> tuple[User, str]:
    if session.execute(select(User.id).where(User.name == name)).first():
        raise ApiError(409, "user_exists", f"a user named {name!r} already exists")
    user = User(name=name, email=email, is_site_admin=site_admin)
    session.add(user)
    session.flush()
    token, _ = issue_token(session, user, token_label or "first", token_expires_in_s)
    audit.record(
        session, actor, "user.create", "user", user.id, None, {"name": name, "email": email, "site_admin": site_admin}
    )
    return user, token


def user_named(session: Session, name: str) -> User:
    user = session.execute(select(User).where(User.name == name)).scalar_one_or_none()
    if user is None:
        raise ApiError(404, "user_not_found", f"no user named {name!r}")
    return user


def project_named(session: Session, name_or_id: str) -> Project:
    query = select(Project).where(Project.name == name_or_id)
    project = session.execute(query).scalar_one_or_none()
    if project is None and name_or_id.isdigit():
        project = session.get(Project, int(name_or_id))
    if project is None:
        raise ApiError(404, "project_not_found", f"no project {name_or_id!r}")
    return project


def set_roles(session: Session, actor: str, project: Project, user: User, roles: list[str]) -> list[str]:
    """Replace the user's roles in the project (an empty list removes them from it)."""
    roles = sorted({check_role(role) for role in roles})
    before = sorted(
        session.execute(
            select(Membership.role).where(Membership.project_id == project.id, Membership.user_id == user.id)
        ).scalars()
    )
    session.execute(delete(Membership).where(Membership.project_id == project.id, Membership.user_id == user.id))
    for role in roles:
        session.add(Membership(project_id=project.id, user_id=user.id, role=role))
    session.flush()
    auth_changed(session)
    audit.record(
        session,
        actor,
        "member.roles",
        "user",
        user.id,
        {"roles": before},
        {"roles": roles, "user": user.name},
        project.id,
    )
    return roles


def grant(session: Session, actor: str, project: Project, user: User, role: str) -> list[str]:
    current = session.execute(
        select(Membership.role).where(Membership.project_id == project.id, Membership.user_id == user.id)
    ).scalars()
    return set_roles(session, actor, project, user, [*current, role])


def revoke_tokens(session: Session, actor: str, user: User, token_id: int | None = None) -> int:
    query = update(ApiToken).where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
    if token_id is not None:
        query = query.where(ApiToken.id == token_id)
    revoked = session.execute(query.values(revoked_at=utcnow()).execution_options(synchronize_session=False)).rowcount
    if revoked:
        auth_changed(session)
        audit.record(
            session, actor, "token.revoke", "user", user.id, None, {"token_id": token_id, "revoked": revoked}, None
        )
    return revoked
