"""Background jobs of a project (today: consensus), for admins: what is queued, running, failed and why."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from sqlalchemy import select

from .. import jobs
from ..auth import Access
from ..models import ADMIN, Job
from ..schemas import MAX_ID, ProjectId
from ..services import Svc

router = APIRouter(prefix="/api/v1/projects/{project_id}", tags=["jobs"])


@router.get("/jobs", summary="Consensus jobs: state, attempts, the last failure's reason, timings (admin)")
def list_jobs(
    project_id: ProjectId,
    access: Access,
    services: Svc,
    state: Literal["queued", "running", "done", "failed"] | None = None,
    after: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict]:
    access.require(ADMIN)
    with services.database.reading() as session:
        query = select(Job).where(Job.project_id == project_id, Job.id > after).order_by(Job.id).limit(limit)
        if state:
            query = query.where(Job.state == state)
        return [jobs.view(job) for job in session.execute(query).scalars()]
