"""The reviewer's decision on a case: per structure accept the consensus, take one reader's, or use the
reviewer's edited final; then approve (the case closes with its final segmentation) or return it to some
readers with a comment (their annotate tasks reopen, reserved for them, in the next round)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
from fastapi import UploadFile
from sqlalchemy import select, update

from MedAnnotAssistLib.core.labelio import ReaderLabels, read_reader, write_seg_nrrd

from . import audit, protocol_rules
from .auth import Caller
from .claims import explain_refusal, lease_task
from .consensus_step import latest_submissions
from .duties import refuse_own_review
from .errors import ApiError
from .models import (
    ANNOTATING,
    APPROVED,
    CLOSED,
    IN_REVIEW,
    LEASED,
    QUEUED,
    REVIEW,
    SUBMITTED,
    Case,
    ConsensusResult,
    Image,
    Project,
    Review,
    Task,
    utcnow,
)
from .schemas import ReviewDecision
from .services import Services, protocol_of
from .uploads import SEGMENTATION_SUFFIXES, check_segmentation, checked_filename, geometry_from_json, receive


def _context(services: Services, caller: Caller, project_id: int, task_id: int, lease_id: str):
    with services.database.reading() as session:
        task = lease_task(session, caller, project_id, task_id, lease_id, REVIEW)
        refuse_own_review(session, caller, task.case_id)
        case = session.get(Case, task.case_id)
        project = session.get(Project, project_id)
        image = session.get(Image, case.image_sha256) if case.image_sha256 else None
        consensus = session.execute(
            select(ConsensusResult).where(ConsensusResult.case_id == case.id, ConsensusResult.round == case.round)
        ).scalar_one_or_none()
        submissions = latest_submissions(session, case.id)
    return task, case, project, image, consensus, submissions


def upload_edited(
    services: Services, caller: Caller, project_id: int, task_id: int, lease_id: str, upload: UploadFile
) -> dict:
    """The reviewer's edited final segmentation, used by structures decided ``edited``."""
    task, case, project, image, _consensus, _subs = _context(services, caller, project_id, task_id, lease_id)
    filename, _ = checked_filename(upload.filename, SEGMENTATION_SUFFIXES, "segmentation")
    temporary, sha256, size = receive(services.blobs, upload, ".seg.nrrd", services.settings.max_upload_bytes)
    try:
        geometry = geometry_from_json(image.geometry_json) if image else None
        check_segmentation(
            temporary,
            filename,
            protocol_of(project),
            geometry,
            services.settings.max_voxels,
            caller.name,
            max_bytes=services.settings.max_image_bytes,
        )
        services.blobs.adopt(temporary, sha256, ".seg.nrrd")
    finally:
        temporary.unlink(missing_ok=True)
    with services.database.writing() as session:
        done = session.execute(
            update(Task)
            .where(Task.id == task_id, Task.lease_id == lease_id, Task.holder_id == caller.id, Task.state == LEASED)
            .values(draft_sha256=sha256)
            .execution_options(synchronize_session=False)
        )
        if done.rowcount != 1:
            raise explain_refusal(session, caller, project_id, task_id, lease_id)
        audit.record(
            session, caller.name, "review.edited_upload", "task", task_id, None, {"draft_sha256": sha256}, project_id
        )
    return {"task_id": task_id, "case_id": case.id, "sha256": sha256, "size_bytes": size}


def _final_labels(services, project, consensus, submissions, task, decision: ReviewDecision):
    """The approved segmentation (one label per protocol structure, in protocol order) and the reviewer's
    overrides it needs: it must pass the protocol's blocking rules as a submission must."""
    protocol = protocol_of(project)
    blobs = services.blobs
    by_reader = {name: row for row, name in submissions}
    sources: dict[str, ReaderLabels] = {}

    def source(key: str, path: Path) -> ReaderLabels:
        if key not in sources:
            sources[key] = read_reader(path, protocol, name=key)
        return sources[key]

    known = {s.id for s in protocol.structures}
    unknown = sorted(set(decision.structures) - known)
    if unknown:
        raise ApiError(422, "unknown_structure", f"structures not in the protocol: {', '.join(unknown)}")
    chosen: dict[str, ReaderLabels] = {}
    for structure in protocol.structures:
        item = decision.structures.get(structure.id)
        action = item.action if item else "accept_consensus"
        if action == "accept_consensus":
            if consensus is not None:
                chosen[structure.id] = source("consensus", blobs.path(consensus.consensus_sha256, ".seg.nrrd"))
            elif len(submissions) == 1:  # one reader: their segmentation is the proposal
                row, name = submissions[0]
                chosen[structure.id] = source(name, blobs.path(row.sha256, ".seg.nrrd"))
        elif action == "take_reader":
            if item.reader not in by_reader:
                raise ApiError(
                    422,
                    "unknown_reader",
                    f"{structure.id}: {item.reader!r} is not a reader of this case ({', '.join(sorted(by_reader))})",
                )
            chosen[structure.id] = source(item.reader, blobs.path(by_reader[item.reader].sha256, ".seg.nrrd"))
        else:
            if not task.draft_sha256:
                raise ApiError(
                    409, "no_edited_final", f"{structure.id}: upload the edited final first (POST .../review/edited)"
                )
            chosen[structure.id] = source("edited", blobs.path(task.draft_sha256, ".seg.nrrd"))
    if not chosen:
        raise ApiError(409, "nothing_to_approve", "there is no consensus or reader segmentation to approve")
    geometry = next(iter(chosen.values())).geometry
    labels = np.zeros(next(iter(chosen.values())).layers[0].shape, np.uint8 if len(known) < 255 else np.uint16)
    segments = []
    for value, structure in enumerate(protocol.structures, start=1):
        reader = chosen.get(structure.id)
        if reader is not None and structure.id in reader.segments:
            labels[reader.mask(structure.id)] = value
            segments.append((value, structure))
    overrides = [o.model_dump() for o in decision.overrides]
    values = {structure.id: value for value, structure in segments}
    needed = protocol_rules.check_final(protocol, labels, geometry, values, overrides)
    with tempfile.TemporaryDirectory(dir=blobs.tmp, prefix="final-") as out:
        path = write_seg_nrrd(Path(out) / "final.seg.nrrd", labels, geometry, segments, protocol)
        sha256, _ = blobs.put_file(path, ".seg.nrrd")
    return sha256, needed


def decide(services: Services, caller: Caller, project_id: int, task_id: int, decision: ReviewDecision) -> dict:
    task, case, project, _image, consensus, submissions = _context(
        services, caller, project_id, task_id, decision.lease_id
    )
    readers = {name: row for row, name in submissions}
    final_sha256, overrides = None, []
    if decision.decision == "approve":
        final_sha256, overrides = _final_labels(services, project, consensus, submissions, task, decision)
    else:
        if not decision.returns:
            raise ApiError(422, "invalid_request", "returns: name at least one reader to return the case to")
        missing = [r.reader for r in decision.returns if r.reader not in readers]
        if missing:
            raise ApiError(
                422, "unknown_reader", f"not readers of this case: {', '.join(missing)}", readers=sorted(readers)
            )
    now = utcnow()
    with services.database.writing() as session:
        done = session.execute(
            update(Task)
            .where(
                Task.id == task_id,
                Task.lease_id == decision.lease_id,
                Task.holder_id == caller.id,
                Task.state == LEASED,
            )
            .values(state=SUBMITTED if final_sha256 else CLOSED, submitted_at=now, lease_expires_at=None)
            .execution_options(synchronize_session=False)
        )
        if done.rowcount != 1:
            raise explain_refusal(session, caller, project_id, task_id, decision.lease_id)
        case = session.get(Case, case.id, populate_existing=True)
        if case.state != IN_REVIEW:
            raise ApiError(409, "case_state", f"case {case.id} is {case.state}, not in review")
        before = {"state": case.state, "round": case.round}
        returns = [r.model_dump() for r in decision.returns]
        if final_sha256:
            case.state, case.final_sha256 = APPROVED, final_sha256
        else:
            case.state, case.round = ANNOTATING, case.round + 1
            for item in decision.returns:
                reader_task = readers[item.reader].task_id
                session.execute(
                    update(Task)
                    .where(Task.id == reader_task)
                    .values(
                        state=QUEUED,
                        assignee_id=readers[item.reader].reader_id,
                        holder_id=None,
                        lease_id=None,
                        lease_expires_at=None,
                        round=case.round,
                        comment=item.comment,
                    )
                    .execution_options(synchronize_session=False)
                )
        review = Review(
            case_id=case.id,
            task_id=task_id,
            reviewer_id=caller.id,
            round=before["round"],
            decision=decision.decision,
            structures_json=json.dumps({k: v.model_dump() for k, v in decision.structures.items()}),
            returns_json=json.dumps(returns),
            final_sha256=final_sha256,
            overrides_json=json.dumps(overrides),
            created_at=now,
        )
        session.add(review)
        session.flush()
        after = {"state": case.state, "round": case.round, "final_sha256": final_sha256, "returned_to": returns}
        after |= {"overrides": overrides} if overrides else {}
        audit.record(session, caller.name, f"review.{decision.decision}", "case", case.id, before, after, project_id)
        return {
            "review_id": review.id,
            "case_id": case.id,
            "decision": decision.decision,
            "case_state": case.state,
            "round": case.round,
            "final_sha256": final_sha256,
            "returned_to": [r["reader"] for r in returns],
            "overrides": overrides,
        }
