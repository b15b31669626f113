"""When the last reader of a case submits: a consensus job, then a review task (or approval when review is off).

The submit only queues the job (``after_last_reader``) and answers; a worker (``worker``: a thread of
``medannot serve``, or ``medannot worker`` processes) runs it: reads the readers' files and the case image,
computes consensus outside any transaction (it takes seconds and must not hold SQLite's write lock), stores
the outputs, and records the result once per case and round (a unique constraint); the case moves on only
if it is still waiting, checked inside the write transaction that also marks the job done. If the process
dies in between, the submissions are safe: the job's lease expires and another worker takes it, and
``reconcile`` (run on every start and now and then by idle workers) queues any case whose readers are all
in but that has no job.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

from sqlalchemy import exists, func, select
from sqlalchemy.exc import IntegrityError

from MedAnnotAssistLib.core.consensus_files import run_consensus
from MedAnnotAssistLib.core.protocol import Protocol

from . import audit, jobs
from .models import (
    ANNOTATE,
    ANNOTATING,
    APPROVED,
    CONSENSUS,
    IN_REVIEW,
    JOB_FAILED,
    QUEUED,
    REVIEW,
    SUBMITTED,
    Case,
    ConsensusResult,
    Image,
    Job,
    Project,
    Submission,
    Task,
    User,
)
from .services import Services

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
    """Queue the case's consensus job; the submission is already acknowledged, so a failure here is only
    logged (``reconcile`` queues it later)."""
    try:
        enqueue(services, case_id)
    except Exception:
        log.exception("case %s: queueing its consensus failed; reconcile will queue it", case_id)


def enqueue(services: Services, case_id: int, actor: str | None = None) -> bool:
    """Queue the consensus of a case whose readers are all in, for its current round, unless it is queued
    already; an ``actor`` (an admin) also queues a failed job again. Returns whether a job was queued."""
    with services.database.writing() as session:
        case = session.execute(select(Case).where(Case.id == case_id).with_for_update()).scalar_one_or_none()
        if case is None or not _waiting(session, case_id):
            return False
        job, created = jobs.add(session, CONSENSUS, case.project_id, case_id, case.round)
        before = None if created else job.state
        if not created and not (actor and job.state == JOB_FAILED):
            return False
        if not created:
            jobs.requeue(job)
        if actor:
            after = {"job_id": job.id, "state": job.state, "round": job.round}
            audit.record(session, actor, "consensus.queue", "case", case_id, {"job": before}, after, case.project_id)
    jobs.notify()
    return True


def job_view(session, case_id: int) -> dict | None:
    """The case's latest consensus job: queued, running, failed (with its reason) or done; None before any."""
    job = jobs.latest(session, CONSENSUS, case_id)
    return jobs.view(job) if job else None


def _waiting(session, case_id: int) -> bool:
    case = session.get(Case, case_id)
    if case is None or case.state != ANNOTATING:
        return False
    return not session.execute(
        select(exists().where(Task.case_id == case_id, Task.kind == ANNOTATE, Task.state != SUBMITTED))
    ).scalar()


def compute_files(reader_paths: list[str], reader_names: list[str], protocol_json: str, image_path, out_dir) -> dict:
    """The consensus of the readers' files and the report over the case image, written to ``out_dir``; plain
    arguments and result, so it runs in a child process or on a Dask worker as well as here."""
    protocol = Protocol.from_json(json.loads(protocol_json), source="project")
    result, written = run_consensus(reader_paths, protocol, out_dir, reader_names=reader_names, image_path=image_path)
    agreement = result.as_dict()
    for reader in agreement["readers"]:
        reader["file"] = None  # server paths stay on the server
    return {"agreement": agreement, "files": {name: str(path) for name, path in written.items()}}


def compute_inputs(services: Services, case: Case, project: Project, submissions, image: Image | None) -> dict:
    """``compute_files``' arguments but ``out_dir``, and ``labels``: a name for each input file, which error
    messages show instead of its path."""
    blobs = services.blobs  # absolute paths: the compute may run in another working directory (Dask)
    paths = [str(blobs.path(row.sha256, ".seg.nrrd").resolve()) for row, _ in submissions]
    labels = {path: f"submission {row.id} ({name})" for path, (row, name) in zip(paths, submissions, strict=True)}
    image_path = str(blobs.path(image.sha256, image.suffix).resolve()) if image is not None else None
    if image_path:
        labels[image_path] = f"the image of case {case.id}"
    return {
        "reader_paths": paths,
        "reader_names": [name for _, name in submissions],
        "protocol_json": project.protocol_json,
        "image_path": image_path,
        "labels": labels,
    }


def store_outputs(services: Services, computed: dict, submissions) -> dict:
    """The outputs of ``compute_files`` into the blob store: the columns of a ConsensusResult."""
    put = services.blobs.put_file
    files = computed["files"]
    consensus, _ = put(Path(files["consensus.seg.nrrd"]), ".seg.nrrd")
    disagreement, _ = put(Path(files["disagreement.nrrd"]), ".nrrd")
    report, _ = put(Path(files["report.html"]), ".html")
    return {
        "consensus_sha256": consensus,
        "disagreement_sha256": disagreement,
        "report_sha256": report,
        "agreement_json": json.dumps(computed["agreement"]),
        "submission_ids_json": json.dumps([row.id for row, _ in submissions]),
    }


def advance(services: Services, ticket: jobs.Ticket, worker: str, compute) -> str | None:
    """Run a consensus job: move its case, if its readers are all in, to review (or approval) and mark the job
    done. ``compute(inputs)`` returns ``compute_files``' result. Returns the case's new state, if any."""
    case_id = ticket.case_id
    with services.database.reading() as session:
        case = session.get(Case, case_id)
        waiting = _waiting(session, case_id) and case.round == ticket.round
        if waiting:
            project = session.get(Project, case.project_id)
            submissions = latest_submissions(session, case_id)
            image = session.get(Image, case.image_sha256) if case.image_sha256 else None
            existing = session.execute(
                select(ConsensusResult).where(ConsensusResult.case_id == case_id, ConsensusResult.round == case.round)
            ).scalar_one_or_none()
    if not waiting:  # moved on already (another worker, or a round superseded): nothing left to do
        with services.database.writing() as session:
            jobs.finish(session, ticket.id, worker)
        return None
    computed = None
    if len(submissions) >= 2 and existing is None:
        inputs = compute_inputs(services, case, project, submissions, image)
        with tempfile.TemporaryDirectory(dir=services.blobs.tmp, prefix="consensus-") as out:
            computed = store_outputs(services, compute(inputs | {"out_dir": str(Path(out).resolve())}), submissions)
    try:
        return _record(services, case_id, computed, submissions, ticket, worker)
    except IntegrityError:
        log.info("case %s: consensus already recorded by another worker", case_id)
        with services.database.writing() as session:
            jobs.finish(session, ticket.id, worker)
        return None


def _record(services: Services, case_id: int, computed: dict | None, submissions, ticket, worker) -> str | None:
    with services.database.writing() as session:
        case = session.execute(select(Case).where(Case.id == case_id).with_for_update()).scalar_one()
        jobs.finish(session, ticket.id, worker)
        if not _waiting(session, case_id) or case.round != ticket.round:
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
    """Queue the consensus of every case whose readers are all in but that has no job for its round (the
    process died between the last submission and queueing it); returns how many were queued."""
    with services.database.reading() as session:
        pending = (
            session.execute(
                select(Case.id).where(
                    Case.state == ANNOTATING,
                    exists().where(Task.case_id == Case.id, Task.kind == ANNOTATE),
                    ~exists().where(Task.case_id == Case.id, Task.kind == ANNOTATE, Task.state != SUBMITTED),
                    ~exists().where(Job.kind == CONSENSUS, Job.case_id == Case.id, Job.round == Case.round),
                )
            )
            .scalars()
            .all()
        )
    return sum(enqueue(services, case_id) for case_id in pending)
