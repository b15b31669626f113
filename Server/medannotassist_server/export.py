"""Export of approved cases, with provenance: an nnU-Net v2 raw dataset or a MONAI datalist, as a zip.

nnU-Net: ``DatasetXXX_Name/imagesTr/{case}_0000.nii.gz``, ``labelsTr/{case}.nii.gz`` and
``dataset.json`` (channel_names, labels, numTraining, file_ending). MONAI: ``images/``, ``labels/`` and
``datalist.json`` (``training`` list of image/label pairs). Label values are the protocol's structures in
protocol order, 1..N, background 0, in both. ``provenance.json`` says, per case, who read it, who
reviewed it, the consensus metrics and the protocol version.
"""

from __future__ import annotations

import json
import re
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from sqlalchemy import select

from MedAnnotAssistLib.core.labelio import read_reader

from . import audit
from .auth import Caller
from .consensus_step import latest_submissions
from .models import APPROVED, Case, ConsensusResult, Export, Image, Project, Review, User, utcnow
from .schemas import ExportRequest
from .services import Services, protocol_of


def _case_id(name: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-") or "case"
    candidate, number = base, 2
    while candidate in taken:
        candidate, number = f"{base}-{number}", number + 1
    taken.add(candidate)
    return candidate


def _summary(agreement_json: str | None) -> dict | None:
    if not agreement_json:
        return None
    agreement = json.loads(agreement_json)
    return {
        "fusion": agreement.get("fusion"),
        "summary": agreement.get("summary"),
        "structures": {
            name: {"verdict": item["verdict"], "pairwise": item["pairwise"]}
            for name, item in agreement.get("structures", {}).items()
        },
    }


def _gather(services: Services, project_id: int):
    with services.database.reading() as session:
        project = session.get(Project, project_id)
        cases = session.execute(
            select(Case).where(Case.project_id == project_id, Case.state == APPROVED).order_by(Case.id)
        ).scalars()
        rows = []
        for case in cases:
            image = session.get(Image, case.image_sha256) if case.image_sha256 else None
            review = session.execute(
                select(Review, User.name)
                .join(User, User.id == Review.reviewer_id)
                .where(Review.case_id == case.id, Review.decision == "approve")
                .order_by(Review.id.desc())
            ).first()
            consensus = session.execute(
                select(ConsensusResult)
                .where(ConsensusResult.case_id == case.id)
                .order_by(ConsensusResult.round.desc())
                .limit(1)
            ).scalar_one_or_none()
            readers = [
                {"reader": name, "submission_id": row.id, "sha256": row.sha256, "round": row.round}
                for row, name in latest_submissions(session, case.id)
            ]
            rows.append((case, image, review, consensus, readers))
    return project, rows


def export(services: Services, caller: Caller, project_id: int, request: ExportRequest) -> dict:
    import SimpleITK as sitk

    project, rows = _gather(services, project_id)
    protocol = protocol_of(project)
    labels = {"background": 0} | {s.id: value for value, s in enumerate(protocol.structures, start=1)}
    blobs = services.blobs
    taken: set[str] = set()
    training, provenance_cases, skipped = [], [], []
    with tempfile.TemporaryDirectory(dir=blobs.tmp, prefix="export-") as out:
        if request.format == "nnunet":
            root = Path(out) / f"Dataset{request.dataset_id:03d}_{request.dataset_name}"
            images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
        else:
            root = Path(out) / request.dataset_name
            images_dir, labels_dir = root / "images", root / "labels"
        images_dir.mkdir(parents=True)
        labels_dir.mkdir(parents=True)
        for case, image, review, consensus, readers in rows:
            if image is None or not case.final_sha256:
                skipped.append({"case": case.name, "reason": "no image stored on the server (DICOMweb reference)"})
                continue
            case_id = _case_id(case.name, taken)
            volume = sitk.ReadImage(str(blobs.path(image.sha256, image.suffix)))
            final = read_reader(blobs.path(case.final_sha256, ".seg.nrrd"), protocol, name="final")
            labelmap = np.zeros(final.layers[0].shape, np.uint8 if len(labels) < 256 else np.uint16)
            for structure in protocol.structures:
                labelmap[final.mask(structure.id)] = labels[structure.id]
            label_image = sitk.GetImageFromArray(labelmap)
            label_image.CopyInformation(volume)
            image_name = f"{case_id}_0000.nii.gz" if request.format == "nnunet" else f"{case_id}.nii.gz"
            sitk.WriteImage(volume, str(images_dir / image_name), useCompression=True)
            sitk.WriteImage(label_image, str(labels_dir / f"{case_id}.nii.gz"), useCompression=True)
            training.append(
                {"image": f"{images_dir.name}/{image_name}", "label": f"{labels_dir.name}/{case_id}.nii.gz"}
            )
            provenance_cases.append(
                {
                    "case_id": case_id,
                    "case": case.name,
                    "image_sha256": image.sha256,
                    "final_sha256": case.final_sha256,
                    "readers": readers,
                    "reviewer": review[1] if review else None,
                    "review_id": review[0].id if review else None,
                    "consensus": _summary(consensus.agreement_json) if consensus else None,
                }
            )
        if request.format == "nnunet":
            manifest = {
                "name": request.dataset_name,
                "description": f"{protocol.title} ({protocol.label}), approved cases of project {project.name}",
                "reference": protocol.label,
                "channel_names": {"0": protocol.modality},
                "labels": labels,
                "numTraining": len(training),
                "file_ending": ".nii.gz",
            }
            (root / "dataset.json").write_text(json.dumps(manifest, indent=2) + "\n")
        else:
            manifest = {"labels": {str(v): k for k, v in labels.items()}, "training": training}
            (root / "datalist.json").write_text(json.dumps(manifest, indent=2) + "\n")
        provenance = {
            "format": "medannotassist.export-provenance/1",
            "project": project.name,
            "protocol": {"id": protocol.id, "version": protocol.version, "checksum": project.protocol_checksum},
            "readers_per_case": project.readers_per_case,
            "exported_by": caller.name,
            "exported_at": utcnow().isoformat() + "Z",
            "cases": provenance_cases,
            "skipped": skipped,
        }
        (root / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
        archive = Path(out) / "export.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zipped:
            for path in sorted(root.rglob("*")):
                if path.is_file():
                    zipped.write(path, path.relative_to(Path(out)).as_posix())
        sha256, _ = blobs.put_file(archive, ".zip")
    with services.database.writing() as session:
        row = Export(
            project_id=project_id,
            format=request.format,
            created_by=caller.id,
            archive_sha256=sha256,
            case_count=len(training),
            manifest_json=json.dumps({"root": root.name, "skipped": skipped}),
        )
        session.add(row)
        session.flush()
        audit.record(
            session,
            caller.name,
            "export.create",
            "export",
            row.id,
            None,
            {"format": request.format, "cases": len(training), "sha256": sha256},
            project_id,
        )
        export_id = row.id
    return {
        "export_id": export_id,
        "format": request.format,
        "root": root.name,
        "cases": len(training),
        "skipped": skipped,
        "sha256": sha256,
        "download": f"/api/v1/projects/{project_id}/exports/{export_id}/archive",
    }
