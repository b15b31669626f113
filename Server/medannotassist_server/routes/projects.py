"""Projects (a frozen protocol version), members and roles, progress, the project's audit events, exports."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse
from sqlalchemy import String, and_, cast, or_, select

from MedAnnotAssistLib.core.protocol import ProtocolError, bundled_protocol, parse_protocol

from .. import audit
from ..accounts import set_roles, user_named
from ..auth import Access, CurrentCaller
from ..duties import blinded_case_ids
from ..errors import ApiError, not_found
from ..export import export
from ..models import ADMIN, REVIEWER, AuditEvent, Case, Export, Membership, Project, Task, User
from ..progress import progress
from ..schemas import MAX_ID, ExportId, ExportRequest, MemberRoles, ProjectCreate, ProjectId, UserName
from ..services import Svc

router = APIRouter(prefix="/api/v1/projects", tags=["projects"])


def project_view(project: Project, roles=None) -> dict:
    view = {
        "id": project.id,
        "name": project.name,
        "protocol": {
            "id": project.protocol_id,
            "version": project.protocol_version,
            "checksum": project.protocol_checksum,
        },
        "readers_per_case": project.readers_per_case,
        "review": project.review_enabled,
        "created_at": project.created_at.isoformat() + "Z",
    }
    if roles is not None:
        view["roles"] = sorted(roles)
    return view


@router.post("", status_code=201, summary="Create a project with a bundled or uploaded protocol (site admin)")
def create_project(body: ProjectCreate, caller: CurrentCaller, services: Svc) -> dict:
    if not caller.is_site_admin:
        raise ApiError(403, "forbidden", "only a site admin creates projects")
    if (body.protocol_id is None) == (body.protocol is None):
        raise ApiError(422, "invalid_request", "give exactly one of protocol_id (a bundled protocol) or protocol")
    try:
        if body.protocol_id is not None:
            protocol = bundled_protocol(body.protocol_id)
        else:
            protocol = parse_protocol(json.dumps(body.protocol), source="uploaded protocol")
    except KeyError as error:
        raise ApiError(422, "unknown_protocol", str(error.args[0])) from None
    except ProtocolError as error:
        raise ApiError(
            422, "invalid_protocol", "the protocol is not valid", problems=[str(p) for p in error.problems]
        ) from None
    with services.database.writing() as session:
        if session.execute(select(Project.id).where(Project.name == body.name)).first():
            raise ApiError(409, "project_exists", f"a project named {body.name!r} already exists")
        project = Project(
            name=body.name,
            protocol_id=protocol.id,
            protocol_version=protocol.version,
            protocol_checksum=protocol.checksum,
            protocol_json=audit.canonical(protocol.raw),
            readers_per_case=body.readers_per_case or protocol.readers_per_case,
            review_enabled=body.review,
            created_by=caller.id,
        )
        session.add(project)
        session.flush()
        audit.record(
            session, caller.name, "project.create", "project", project.id, None, project_view(project), project.id
        )
        return project_view(project)


@router.get("", summary="The projects the caller is a member of (all, for a site admin)")
def list_projects(caller: CurrentCaller, services: Svc) -> list[dict]:
    with services.database.reading() as session:
        roles: dict[int, set[str]] = {}
        for project_id, role in session.execute(
            select(Membership.project_id, Membership.role).where(Membership.user_id == caller.id)
        ):
            roles.setdefault(project_id, set()).add(role)
        query = select(Project).order_by(Project.id)
        if not caller.is_site_admin:
            query = query.where(Project.id.in_(list(roles) or [-1]))
        return [project_view(p, roles.get(p.id, set())) for p in session.execute(query).scalars()]


@router.get("/{project_id}", summary="A project, its frozen protocol and the caller's roles")
def get_project(project_id: ProjectId, access: Access, services: Svc) -> dict:
    with services.database.reading() as session:
        project = session.get(Project, project_id)
        view = project_view(project, access.roles)
        view["protocol"]["document"] = json.loads(project.protocol_json)
        return view


@router.get("/{project_id}/members", summary="Members and their roles (project admin)")
def list_members(project_id: ProjectId, access: Access, services: Svc) -> list[dict]:
    access.require(ADMIN)
    with services.database.reading() as session:
        members: dict[str, list[str]] = {}
        for name, role in session.execute(
            select(User.name, Membership.role)
            .join(User, User.id == Membership.user_id)
            .where(Membership.project_id == project_id)
            .order_by(User.name, Membership.role)
        ):
            members.setdefault(name, []).append(role)
        return [{"user": name, "roles": roles} for name, roles in members.items()]


@router.put("/{project_id}/members/{user_name}", summary="Set a user's roles in the project (project admin)")
def put_member(project_id: ProjectId, user_name: UserName, body: MemberRoles, access: Access, services: Svc) -> dict:
    access.require(ADMIN)
    with services.database.writing() as session:
        project = session.get(Project, project_id)
        user = user_named(session, user_name)
        roles = set_roles(session, access.caller.name, project, user, list(body.roles))
        return {"user": user.name, "roles": roles}


@router.get("/{project_id}/progress", summary="Counts by state, per-reader throughput and agreement")
def get_progress(project_id: ProjectId, access: Access, services: Svc) -> dict:
    access.require(REVIEWER)
    with services.database.reading() as session:
        return progress(session, project_id, blinded_case_ids(access.caller.id, project_id))


@router.get("/{project_id}/audit", tags=["audit"], summary="The project's audit events, oldest first (project admin)")
def project_audit(
    project_id: ProjectId,
    access: Access,
    services: Svc,
    after: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[dict]:
    access.require(ADMIN)
    with services.database.reading() as session:
        query = select(AuditEvent).where(AuditEvent.project_id == project_id, AuditEvent.seq > after)
        blinded = blinded_case_ids(access.caller.id, project_id)
        if session.execute(blinded.limit(1)).first() is not None:
            # a case the caller reads: only their own events about it until it is approved (seq shows the gaps)
            cases = select(cast(Case.id, String)).where(Case.id.in_(blinded))
            tasks = select(cast(Task.id, String)).where(Task.case_id.in_(blinded))
            about = or_(
                and_(AuditEvent.entity == "case", AuditEvent.entity_id.in_(cases)),
                and_(AuditEvent.entity == "task", AuditEvent.entity_id.in_(tasks)),
            )
            query = query.where(or_(AuditEvent.actor == access.caller.name, ~about))
        rows = session.execute(query.order_by(AuditEvent.seq).limit(limit)).scalars()
        return [
            {
                "seq": row.seq,
                "at": row.at,
                "actor": row.actor,
                "action": row.action,
                "entity": row.entity,
                "entity_id": row.entity_id,
                "before": json.loads(row.before_json),
                "after": json.loads(row.after_json),
                "hash": row.hash,
            }
            for row in rows
        ]


@router.post("/{project_id}/exports", status_code=201, tags=["exports"], summary="Export approved cases")
def create_export(project_id: ProjectId, body: ExportRequest, access: Access, services: Svc) -> dict:
    access.require(ADMIN)
    return export(services, access.caller, project_id, body)


@router.get("/{project_id}/exports/{export_id}/archive", tags=["exports"], summary="The export as a zip")
def export_archive(project_id: ProjectId, export_id: ExportId, access: Access, services: Svc):
    access.require(ADMIN)
    with services.database.reading() as session:
        row = session.get(Export, export_id)
        if row is None or row.project_id != project_id:
            raise not_found("export", export_id)
    path = services.blobs.path(row.archive_sha256, ".zip")
    return FileResponse(path, media_type="application/zip", filename=f"export-{export_id}.zip")
