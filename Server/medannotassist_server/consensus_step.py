"""When the last reader of a case submits: consensus, then a review task (or approval when review is off).

Consensus is computed outside any transaction (it takes seconds and must not hold SQLite's write lock);
the result is recorded once per case and round (a unique constraint), and the case moves on only if it
is still waiting, checked inside the write transaction. If the process dies in between, the submissions
are safe and ``reconcile`` (run on every start, and by ``POST .../cases/{id}/consensus``) finishes it.
"""

from __future__ import annotations

import json
import logging
import tempfile

from sqlalchemy import exists, func, select
from sqlalchemy.exc import IntegrityError

from MedAnnotAssistLib.core.consensus import compute_consensus
from MedAnnotAssistLib.core.consensus_files import write_consensus
from MedAnnotAssistLib.core.labelio import read_reader

from . import audit
from .models import (
    ANNOTATE,
    ANNOTATING,
    APPROVED,
    IN_REVIEW,
    QUEUED,
    REVIEW,
    SUBMITTED,
    Case,
    ConsensusResult,
    Project,
    Submission,
    Task,
    User,
)
from .services import Services, protocol_of

log = logging.getLogger("medannotassist_server")
SYSTEM = "system"


def latest_submissions(session, case_id: int) -> list[tuple[Submission, str]]:
    """The newest submission of each annotate task of a case, with its reader's name, by task."""
    newest = (
        select(func.max(Submission.id))
        .where(Submission.case_id == case_id)
        .group_by(Submission.task_id)
        .scalar_subquery()
    )
    rows = session.execute(
        select(Submission, User.name)
        .join(User, User.id == Submission.reader_id)
        .where(Submission.id.in_(newest))
        .order_by(Submission.task_id)
    ).all()
    return [(row, name) for row, name in rows]


def after_last_reader(services: Services, case_id: int) -> None:
    try:
        advance(services, case_id)
    except Exception:
        # the submission is already acknowledged; the case is finished by reconcile on the next start
        log.exception("consensus for case %s failed; it will be retried by reconcile", case_id)


def _waiting(session, case_id: int) -> bool:
    case = session.get(Case, case_id)
    if case is None or case.state != ANNOTATING:
        return False
    return not session.execute(
        select(exists().where(Task.case_id == case_id, Task.kind == ANNOTATE, Task.state != SUBMITTED))
    ).scalar()


def _compute(services: Services, project: Project, submissions) -> dict:
    protocol = protocol_of(project)
    blobs = services.blobs
    readers = [read_reader(blobs.path(row.sha256, ".seg.nrrd"), protocol, name=name) for row, name in submissions]
    result = compute_consensus(readers, protocol)
    with tempfile.TemporaryDirectory(dir=blobs.tmp, prefix="consensus-") as out:
        written = write_consensus(result, out)
        consensus, _ = blobs.put_file(written["consensus.seg.nrrd"], ".seg.nrrd")
        disagreement, _ = blobs.put_file(written["disagreement.nrrd"], ".nrrd")
        report, _ = blobs.put_file(written["report.html"], ".html")
    agreement = result.as_dict()
    for reader in agreement["readers"]:
        reader["file"] = None  # server paths stay on the server
    return {
        "consensus_sha256": consensus,
        "disagreement_sha256": disagreement,
        "report_sha256": report,
        "agreement_json": json.dumps(agreement),
        "submission_ids_json": json.dumps([row.id for row, _ in submissions]),
    }


def advance(services: Services, case_id: int) -> str | None:
    """Move a case whose readers are all in to review (or approval); returns its new state, if any."""
    database = services.database
    with database.reading() as session:
        if not _waiting(session, case_id):
            return None
        case = session.get(Case, case_id)
        project = session.get(Project, case.project_id)
        submissions = latest_submissions(session, case_id)
        existing = session.execute(
            select(ConsensusResult).where(ConsensusResult.case_id == case_id, ConsensusResult.round == case.round)
        ).scalar_one_or_none()
    computed = _compute(services, project, submissions) if len(submissions) >= 2 and existing is None else None
    try:
        return _record(services, case_id, computed, submissions)
    except IntegrityError:
        log.info("case %s: consensus already recorded by another process", case_id)
        return None


def _record(services: Services, case_id: int, computed: dict | None, submissions) -> str | None:
    with services.database.writing() as session:
        case = session.execute(select(Case).where(Case.id == case_id).with_for_update()).scalar_one()
        if not _waiting(session, case_id):
            return None
        project = session.get(Project, case.project_id)
        consensus = session.execute(
            select(ConsensusResult).where(ConsensusResult.case_id == case_id, ConsensusResult.round == case.round)
        ).scalar_one_or_none()
        if consensus is None and computed is not None:
            consensus = ConsensusResult(case_id=case_id, round=case.round, **computed)
            session.add(consensus)
            session.flush()
            audit.record(
                session,
                SYSTEM,
                "consensus.create",
                "case",
                case_id,
                None,
                {"round": case.round, "consensus_sha256": consensus.consensus_sha256},
                project.id,
            )
        final = consensus.consensus_sha256 if consensus else submissions[-1][0].sha256
        return move_on(session, case, project, final)


def move_on(session, case: Case, project: Project, proposal_sha256: str) -> str:
    """All readers are in: open the review task, or (review off) approve ``proposal_sha256`` as final."""
    before = {"state": case.state}
    if project.review_enabled:
        case.state = IN_REVIEW
        review = Task(
            project_id=project.id, case_id=case.id, kind=REVIEW, state=QUEUED, priority=case.priority, round=case.round
        )
        session.add(review)
        session.flush()
        after = {"state": IN_REVIEW, "review_task_id": review.id}
    else:
        case.state, case.final_sha256 = APPROVED, proposal_sha256
        after = {"state": APPROVED, "final_sha256": case.final_sha256}
    audit.record(session, SYSTEM, "case.readers_done", "case", case.id, before, after, project.id)
    return case.state


def reconcile(services: Services) -> int:
    """Finish every case whose readers are all in but that did not move on (a crash in between)."""
    with services.database.reading() as session:
        pending = (
            session.execute(
                select(Case.id).where(
                    Case.state == ANNOTATING,
                    exists().where(Task.case_id == Case.id, Task.kind == ANNOTATE),
                    ~exists().where(Task.case_id == Case.id, Task.kind == ANNOTATE, Task.state != SUBMITTED),
                )
            )
            .scalars()
            .all()
        )
    for case_id in pending:
        after_last_reader(services, case_id)
    return len(pending)
