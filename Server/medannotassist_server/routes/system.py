"""Health, the caller, users and their tokens, and the audit chain check."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select, text

from .. import __version__, audit
from ..accounts import create_user, revoke_tokens
from ..auth import CurrentCaller, expires_text, issue_token
from ..errors import ApiError
from ..models import ApiToken, Membership, Project, User
from ..schemas import TokenCreate, TokenId, UserCreate
from ..services import Svc

router = APIRouter(prefix="/api/v1")


@router.get("/health", tags=["system"], summary="Liveness and database check (no token needed)")
def health(services: Svc) -> dict:
    with services.database.reading() as session:
        session.execute(text("SELECT 1"))
    return {"status": "ok", "version": __version__, "database": services.database.engine.dialect.name}


@router.get("/me", tags=["users"], summary="The caller and their project roles")
def me(caller: CurrentCaller, services: Svc) -> dict:
    with services.database.reading() as session:
        user = session.get(User, caller.id)
        rows = session.execute(
            select(Project.id, Project.name, Membership.role)
            .join(Membership, Membership.project_id == Project.id)
            .where(Membership.user_id == caller.id)
            .order_by(Project.id)
        ).all()
    projects: dict[int, dict] = {}
    for project_id, name, role in rows:
        projects.setdefault(project_id, {"id": project_id, "name": name, "roles": []})["roles"].append(role)
    return {
        "id": user.id,
        "name": user.name,
        "email": user.email,
        "site_admin": user.is_site_admin,
        "projects": list(projects.values()),
    }


@router.post("/users", status_code=201, tags=["users"], summary="Create a user and their first token (site admin)")
def new_user(body: UserCreate, caller: CurrentCaller, services: Svc) -> dict:
    if not caller.is_site_admin:
        raise ApiError(403, "forbidden", "only a site admin creates users")
    with services.database.writing() as session:
        user, token = create_user(session, caller.name, body.name, body.email, body.site_admin, body.token_label)
        return {"id": user.id, "name": user.name, "site_admin": user.is_site_admin, "token": token}


@router.get("/me/tokens", tags=["users"], summary="The caller's tokens (never the secrets)")
def my_tokens(caller: CurrentCaller, services: Svc) -> list[dict]:
    with services.database.reading() as session:
        rows = session.execute(select(ApiToken).where(ApiToken.user_id == caller.id).order_by(ApiToken.id)).scalars()
        return [
            {
                "id": row.id,
                "label": row.label,
                "created_at": expires_text(row.created_at),
                "expires_at": expires_text(row.expires_at),
                "revoked": row.revoked_at is not None,
                "current": row.id == caller.token_id,
            }
            for row in rows
        ]


@router.post("/me/tokens", status_code=201, tags=["users"], summary="A new token for the caller, shown once")
def new_token(body: TokenCreate, caller: CurrentCaller, services: Svc) -> dict:
    with services.database.writing() as session:
        user = session.get(User, caller.id)
        token, row = issue_token(session, user, body.label, body.expires_in_s)
        audit.record(session, caller.name, "token.create", "user", caller.id, None, {"token_id": row.id}, None)
        return {"id": row.id, "label": row.label, "token": token, "expires_at": expires_text(row.expires_at)}


@router.delete("/me/tokens/{token_id}", tags=["users"], summary="Revoke one of the caller's tokens")
def revoke_token(token_id: TokenId, caller: CurrentCaller, services: Svc) -> dict:
    with services.database.writing() as session:
        if revoke_tokens(session, caller.name, session.get(User, caller.id), token_id) == 0:
            raise ApiError(404, "token_not_found", f"no active token {token_id} of yours")
    return {"id": token_id, "revoked": True}


@router.get("/audit/verify", tags=["audit"], summary="Check the audit chain and its signed checkpoints (site admin)")
def verify_audit(caller: CurrentCaller, services: Svc) -> dict:
    if not caller.is_site_admin:
        raise ApiError(403, "forbidden", "only a site admin verifies the audit chain")
    with services.database.reading() as session:
        verdict = audit.verify(session, services.database.chain)
    return {
        "ok": verdict.ok,
        "rows": verdict.rows,
        "message": verdict.message,
        "bad_row": verdict.bad_seq,
        "problems": verdict.problems,
        "checkpoints": verdict.checkpoints,
    }
