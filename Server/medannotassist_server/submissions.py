"""A reader's submission: validated, stored durably, recorded once per ``Idempotency-Key``.

The path of one upload: lease checked (fast refusal) → file streamed into the blob store's temporary
area and hashed → a retry with a known Idempotency-Key is answered with the stored response → header,
geometry and segment names checked → blob made durable (fsync) → one write transaction, fenced by the
lease, records the submission and its response → 201. Only after that commit is the upload acknowledged,
so an acknowledged submission survives the process being killed. When it was the case's last reader,
consensus follows (``consensus_step``).
"""

from __future__ import annotations

import hashlib
import json
import logging

from fastapi import UploadFile
from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError

from . import audit, consensus_step, protocol_rules
from .auth import Caller
from .claims import explain_refusal, lease_task
from .errors import ApiError
from .jsonlimits import MAX_JSON_BODY_BYTES, parse_json_text
from .models import ANNOTATE, ANNOTATING, LEASED, SUBMITTED, Case, Image, Project, Submission, Task, utcnow
from .schemas import SubmissionMetadata
from .services import Services, protocol_of
from .uploads import SEGMENTATION_SUFFIXES, check_segmentation, checked_filename, geometry_from_json, receive

log = logging.getLogger("medannotassist_server")


def parse_metadata(text: str | None, protocol) -> dict:
    if text is None or not text.strip():
        raise ApiError(422, "invalid_metadata", "metadata: a JSON object is required (at least time_spent_s)")
    data = parse_json_text(text, "metadata", "invalid_metadata", MAX_JSON_BODY_BYTES)
    if not isinstance(data, dict):
        raise ApiError(422, "invalid_metadata", "metadata: expected a JSON object")
    try:
        SubmissionMetadata.model_validate(data)
    except ValueError as error:
        problems = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in getattr(error, "errors", lambda: [])()]
        raise ApiError(
            422, "invalid_metadata", f"metadata: {'; '.join(problems) or error}", problems=problems
        ) from None
    known = {s.id for s in protocol.structures}
    unknown = sorted(set(data.get("segments", {})) - known)
    if unknown:
        raise ApiError(
            422, "invalid_metadata", f"metadata.segments: not structures of the protocol: {', '.join(unknown)}"
        )
    return data


def _stored_response(row: Submission, request_sha256: str) -> dict:
    if row.request_sha256 != request_sha256:
        raise ApiError(
            409,
            "idempotency_key_reused",
            "this Idempotency-Key was used for a different submission; use a new key for new content",
        )
    return json.loads(row.response_json)


def submit(
    services: Services,
    caller: Caller,
    project_id: int,
    task_id: int,
    upload: UploadFile,
    metadata_text: str | None,
    lease_id: str,
    idempotency_key: str | None,
) -> tuple[int, dict]:
    """Returns (HTTP status, response body); a replay returns the first response unchanged."""
    if idempotency_key is not None and not (1 <= len(idempotency_key) <= 128 and idempotency_key.isprintable()):
        raise ApiError(422, "invalid_idempotency_key", "Idempotency-Key must be 1-128 printable characters")
    database, blobs, settings = services.database, services.blobs, services.settings
    with database.reading() as session:
        earlier = None
        if idempotency_key:
            earlier = session.execute(
                select(Submission).where(
                    Submission.reader_id == caller.id, Submission.idempotency_key == idempotency_key
                )
            ).scalar_one_or_none()
        project = session.get(Project, project_id)
        if earlier is None:
            task = lease_task(session, caller, project_id, task_id, lease_id, ANNOTATE)
        else:
            task = session.get(Task, earlier.task_id)
        case = session.get(Case, task.case_id)
        image = session.get(Image, case.image_sha256) if case.image_sha256 else None
    protocol = protocol_of(project)
    filename, _suffix = checked_filename(upload.filename, SEGMENTATION_SUFFIXES, "segmentation")
    metadata = parse_metadata(metadata_text, protocol)
    temporary, sha256, size = receive(blobs, upload, ".seg.nrrd", settings.max_upload_bytes)
    try:  # every way out removes the temporary file (adopt consumes it when the upload is accepted)
        request_sha256 = hashlib.sha256(f"{task_id}\n{sha256}\n{audit.canonical(metadata)}".encode()).hexdigest()
        if earlier is not None:
            return 201, _stored_response(earlier, request_sha256)
        image_geometry = geometry_from_json(image.geometry_json) if image else None  # DICOMweb: checked on retrieval
        labels = check_segmentation(
            temporary, filename, protocol, image_geometry, settings.max_voxels, caller.name, settings.max_image_bytes
        )
        overrides = protocol_rules.check_submission(protocol, labels, metadata, filename)
        del labels  # as large as the image: not kept while the submission is recorded
        blobs.adopt(temporary, sha256, ".seg.nrrd")
    finally:
        temporary.unlink(missing_ok=True)
    try:
        status, body, complete = _record(
            services,
            caller,
            project,
            task,
            case,
            lease_id,
            idempotency_key,
            sha256,
            size,
            metadata,
            request_sha256,
            overrides,
        )
    except IntegrityError:
        # a concurrent retry with the same key won the race: answer as it was answered
        with database.reading() as session:
            earlier = session.execute(
                select(Submission).where(
                    Submission.reader_id == caller.id, Submission.idempotency_key == idempotency_key
                )
            ).scalar_one_or_none()
        if earlier is None:
            raise
        return 201, _stored_response(earlier, request_sha256)
    if complete:
        consensus_step.after_last_reader(services, case.id)
    return status, body


def _record(services, caller, project, task, case, lease_id, key, sha256, size, metadata, request_sha256, overrides):
    def step(session):
        return _record_in(
            session, caller, project, task, case, lease_id, key, sha256, size, metadata, request_sha256, overrides
        )

    return services.write(step)  # with the claims and heartbeats of the group-commit writer's next batch


def _record_in(session, caller, project, task, case, lease_id, key, sha256, size, metadata, request_sha256, overrides):
    project_id = project.id
    if key:
        earlier = session.execute(
            select(Submission).where(Submission.reader_id == caller.id, Submission.idempotency_key == key)
        ).scalar_one_or_none()
        if earlier is not None:
            return 201, _stored_response(earlier, request_sha256), False
    now = utcnow()
    round_ = session.execute(
        update(Task)
        .where(
            Task.id == task.id,
            Task.project_id == project_id,
            Task.lease_id == lease_id,
            Task.holder_id == caller.id,
            Task.state == LEASED,
        )
        .values(state=SUBMITTED, submitted_at=now, lease_expires_at=None)
        .returning(Task.round)
    ).scalar_one_or_none()
    if round_ is None:
        raise explain_refusal(session, caller, project_id, task.id, lease_id)
    version = 1 + session.execute(select(func.count()).where(Submission.task_id == task.id)).scalar_one()
    submission_id = session.execute(
        insert(Submission)
        .values(
            project_id=project_id,
            case_id=case.id,
            task_id=task.id,
            reader_id=caller.id,
            round=round_,
            version=version,
            sha256=sha256,
            size_bytes=size,
            metadata_json=audit.canonical(metadata),
            overrides_json=json.dumps(overrides),
            idempotency_key=key,
            request_sha256=request_sha256,
            response_json="{}",
            created_at=now,
        )
        .returning(Submission.id)
    ).scalar_one()
    open_tasks = session.execute(
        select(func.count()).where(Task.case_id == case.id, Task.kind == ANNOTATE, Task.state != SUBMITTED)
    ).scalar_one()
    # a case with one reader needs no consensus: it moves on in this transaction
    needs_consensus = open_tasks == 0 and project.readers_per_case > 1
    if open_tasks == 0 and not needs_consensus:
        locked = session.execute(select(Case).where(Case.id == case.id).with_for_update()).scalar_one()
        if locked.state == ANNOTATING:
            consensus_step.move_on(session, locked, project, sha256)
    body = {
        "submission_id": submission_id,
        "task_id": task.id,
        "case_id": case.id,
        "reader": caller.name,
        "round": round_,
        "version": version,
        "sha256": sha256,
        "size_bytes": size,
        "created_at": now.isoformat() + "Z",
        "case_complete": open_tasks == 0,
        "overrides": overrides,
    }
    session.execute(update(Submission).where(Submission.id == submission_id).values(response_json=json.dumps(body)))
    audit.record(
        session,
        caller.name,
        "submission.create",
        "task",
        task.id,
        {"state": LEASED},
        {"state": SUBMITTED, "submission_id": submission_id, "sha256": sha256, "version": version}
        | ({"overrides": overrides} if overrides else {}),
        project_id,
    )
    return 201, body, needs_consensus


def submission_view(row: Submission, reader: str) -> dict:
    return {
        "id": row.id,
        "case_id": row.case_id,
        "task_id": row.task_id,
        "reader": reader,
        "round": row.round,
        "version": row.version,
        "sha256": row.sha256,
        "size_bytes": row.size_bytes,
        "metadata": json.loads(row.metadata_json),
        "overrides": json.loads(row.overrides_json),
        "created_at": row.created_at.isoformat() + "Z",
    }
