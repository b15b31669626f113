"""Cases: an uploaded image (stored once by content) or a DICOMweb series reference, N annotate tasks,
and an optional AI pre-segmentation whose uncertainty becomes the case's priority.

A DICOM series (a zip) is de-identified on ingest by ``dicom_ingest`` and stored as one NRRD volume
through ``store_received_image``, like any other upload.

An image is stored once by content but belongs to the projects it was uploaded to (``project_images``):
a case refers only to an image of its own project, and another project's image is answered exactly as
one never uploaded, so a sha256 does not tell what other projects hold.
"""

from __future__ import annotations

import json

from fastapi import UploadFile
from sqlalchemy import select, update

from . import audit
from .auth import Caller
from .db import insert_new
from .errors import ApiError, not_found
from .models import ANNOTATE, QUEUED, Case, Image, Project, ProjectImage, Task
from .services import Services, protocol_of
from .uploads import (
    IMAGE_SUFFIXES,
    SEGMENTATION_SUFFIXES,
    check_image,
    check_segmentation,
    checked_filename,
    geometry_from_json,
    geometry_json,
    receive,
)


def store_image(services: Services, caller: Caller, upload: UploadFile, *, project_id: int) -> dict:
    """Check and store an image once by content, as an image of the project; returns its sha256 and grid."""
    filename, suffix = checked_filename(upload.filename, IMAGE_SUFFIXES, "image")
    temporary, sha256, size = receive(services.blobs, upload, suffix, services.settings.max_upload_bytes)
    return store_received_image(services, caller, temporary, sha256, size, suffix, filename, project_id=project_id)


def store_received_image(
    services: Services,
    caller: Caller,
    temporary,
    sha256: str,
    size: int,
    suffix: str,
    filename: str,
    note=None,
    *,
    project_id: int,
) -> dict:
    """Store an image file already in the blob store's temporary folder (consumed) and link it to the
    project (the same bytes uploaded before, here or elsewhere, are linked, not stored again); ``note``
    goes to the audit."""
    try:
        with services.database.reading() as session:
            known = session.get(Image, sha256)
        if known is None:
            settings = services.settings
            geometry = check_image(temporary, suffix, filename, settings.max_voxels, settings.max_image_bytes)
            services.blobs.adopt(temporary, sha256, suffix)
    finally:
        temporary.unlink(missing_ok=True)
    with services.database.writing() as session:
        image = session.get(Image, sha256)
        created = image is None
        if created:
            image = Image(sha256=sha256, suffix=suffix, size_bytes=size, geometry_json=geometry_json(geometry))
            session.add(image)
            session.flush()
        link = insert_new(ProjectImage, not services.database.is_sqlite)
        linked = session.execute(link.values(project_id=project_id, image_sha256=sha256)).rowcount == 1
        if created:
            after = {"size_bytes": size} | (note or {})
            audit.record(session, caller.name, "image.create", "image", sha256, None, after, project_id)
        elif linked:
            audit.record(
                session, caller.name, "image.link", "image", sha256, None, {"project_id": project_id}, project_id
            )
        return image_view(image)


def image_view(image: Image) -> dict:
    return {"sha256": image.sha256, "size_bytes": image.size_bytes, "geometry": json.loads(image.geometry_json)}


def add_cases(session, caller: Caller, project: Project, specs: list[dict]) -> list[Case]:
    """Cases and their annotate tasks in one transaction; ``specs``: name, image_sha256|dicomweb, priority."""
    names = [spec["name"] for spec in specs]
    if len(set(names)) != len(names):
        raise ApiError(422, "duplicate_case", "case names must be unique within a request")
    existing = set()
    for start in range(0, len(names), 500):
        existing.update(
            session.execute(
                select(Case.name).where(Case.project_id == project.id, Case.name.in_(names[start : start + 500]))
            ).scalars()
        )
    if existing:
        shown = ", ".join(sorted(existing)[:10])
        raise ApiError(409, "case_exists", f"cases already in the project: {shown}", cases=sorted(existing)[:100])
    images = sorted({spec["image_sha256"] for spec in specs if spec.get("image_sha256")})
    known = set()
    for start in range(0, len(images), 500):
        known.update(
            session.execute(
                select(ProjectImage.image_sha256).where(
                    ProjectImage.project_id == project.id, ProjectImage.image_sha256.in_(images[start : start + 500])
                )
            ).scalars()
        )
    if set(images) - known:
        missing = sorted(set(images) - known)
        raise ApiError(422, "unknown_image", f"no stored image {missing[0]}: upload it first (POST .../images)")
    for spec in specs:
        if bool(spec.get("image_sha256")) == bool(spec.get("dicomweb")):
            raise ApiError(422, "invalid_request", f"case {spec['name']}: give exactly one of image_sha256 or dicomweb")
    cases = [
        Case(
            project_id=project.id,
            name=spec["name"],
            image_sha256=spec.get("image_sha256"),
            dicomweb_json=json.dumps(spec["dicomweb"]) if spec.get("dicomweb") else None,
            priority=spec.get("priority", 0.0),
        )
        for spec in specs
    ]
    session.add_all(cases)
    session.flush()
    session.add_all(
        Task(project_id=project.id, case_id=case.id, kind=ANNOTATE, state=QUEUED, priority=case.priority, round=1)
        for case in cases
        for _reader in range(project.readers_per_case)
    )
    session.flush()
    for case in cases:
        audit.record(
            session,
            caller.name,
            "case.create",
            "case",
            case.id,
            None,
            {
                "name": case.name,
                "image_sha256": case.image_sha256,
                "dicomweb": case.dicomweb_json,
                "tasks": project.readers_per_case,
            },
            project.id,
        )
    return cases


def case_in_project(session, project_id: int, case_id: int) -> Case:
    case = session.get(Case, case_id)
    if case is None or case.project_id != project_id:
        raise not_found("case", case_id)
    return case


def attach_ai_segmentation(
    services: Services, caller: Caller, project_id: int, case_id: int, upload: UploadFile, uncertainty, engine
) -> dict:
    """Store an AI pre-segmentation on a case; its uncertainty (0..1, higher first) sets the priority."""
    with services.database.reading() as session:
        case = case_in_project(session, project_id, case_id)
        project = session.get(Project, project_id)
        image = session.get(Image, case.image_sha256) if case.image_sha256 else None
    filename, _ = checked_filename(upload.filename, SEGMENTATION_SUFFIXES, "segmentation")
    temporary, sha256, size = receive(services.blobs, upload, ".seg.nrrd", services.settings.max_upload_bytes)
    try:
        geometry = geometry_from_json(image.geometry_json) if image else None
        settings = services.settings
        check_segmentation(
            temporary, filename, protocol_of(project), geometry, settings.max_voxels, "ai", settings.max_image_bytes
        )
        services.blobs.adopt(temporary, sha256, ".seg.nrrd")
    finally:
        temporary.unlink(missing_ok=True)
    with services.database.writing() as session:
        case = session.get(Case, case_id)
        before = {"ai_seg_sha256": case.ai_seg_sha256, "priority": case.priority}
        case.ai_seg_sha256, case.ai_json = sha256, json.dumps({"engine": engine})
        if uncertainty is not None:
            case.ai_uncertainty = case.priority = uncertainty
            session.execute(
                update(Task)
                .where(Task.case_id == case_id)
                .values(priority=uncertainty)
                .execution_options(synchronize_session=False)
            )
        after = {"ai_seg_sha256": sha256, "priority": case.priority, "engine": engine}
        audit.record(session, caller.name, "case.ai_segmentation", "case", case_id, before, after, project_id)
    return {"case_id": case_id, "sha256": sha256, "size_bytes": size, "priority": after["priority"]}
