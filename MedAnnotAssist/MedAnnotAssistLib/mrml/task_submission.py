"""The protocol gate and the submission of a task session: rules, overrides and questions; the
``.seg.nrrd`` and its metadata (times, states, provenance, AI-vs-final statistics, each structure's history).
Called through ``TaskSession.check`` and ``TaskSession.pack``."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..core import provenance as prov
from .protocol_segments import applyProtocol, checkSegmentation, structureSegments
from .segmentation import saveSegmentation, segmentMasks
from .task_states import AI_STATES, CLIENT, EMPTY, REFINED, Failure, NotReadyError, SessionCheck, utcnow


def checkSession(session) -> SessionCheck:
    """The protocol's rules on the current content (status tags updated), overrides and questions."""
    session._requireOpen()
    if set(structureSegments(session.segmentationNode, session.protocol)) != {
        s.id for s in session.protocol.structures if s.kind == "segment"
    }:
        applyProtocol(session.segmentationNode, session.protocol)  # a deleted segment comes back, empty
    result = checkSegmentation(session.segmentationNode, session.protocol, updateStatus=True)
    failures = []
    for structure in result.structures:
        for rule in structure.blocking:
            reason = session._overrides.get((structure.structure_id, rule.rule)) or session._overrides.get(
                (structure.structure_id, None)
            )
            failures.append(
                Failure(
                    structure.structure_id,
                    structure.name,
                    rule.rule,
                    rule.value,
                    rule.expected,
                    f"{structure.name}: {rule.message}",
                    reason,
                )
            )
        state = session._states[structure.structure_id]
        if state.ai is None and not state.absent and state.edit in (EMPTY, REFINED):
            state.edit = REFINED if structure.voxels else EMPTY
    session._notify("check")
    return SessionCheck(result, failures, session.unanswered(), list(result.extra_segments))


def packSession(session, out_dir, require_ready: bool = True) -> tuple[Path, dict]:
    """Write ``<case>.seg.nrrd`` into ``out_dir`` and return it with the submission metadata (the
    server's contract: ``time_spent_s``, ``segments`` by structure id, ``client``, ``overrides``; plus
    ``answers``, ``timing``, ``protocol``, ``case`` and ``ai``). With ``require_ready`` an unmet gate
    raises ``NotReadyError``; a local draft may be packed without."""
    check = checkSession(session)
    if require_ready and not check.ready:
        raise NotReadyError(check)
    segments = structureSegments(session.segmentationNode, session.protocol)
    masks, ijk = segmentMasks(session.segmentationNode, list(segments.values()))
    spacing = tuple(np.linalg.norm(np.asarray(ijk)[:3, :3], axis=0)[::-1])
    unit_ml = float(abs(np.linalg.det(np.asarray(ijk)[:3, :3]))) / 1000.0
    times = session.activity.times()
    reports = {}
    for structure in session.protocol.structures:
        if structure.id not in segments:
            continue
        state, final = session._states[structure.id], masks[segments[structure.id]]
        voxels = int(np.count_nonzero(final))
        report = {
            "state": state.state if state.absent else state.edit,
            "done": state.done,
            "required": structure.required,
            "active_s": round(times.structure_s(structure.id), 3),
            "voxels": voxels,
            "volume_ml": round(voxels * unit_ml, 4),
            "sha256": prov.mask_sha256(final),
        }
        final_entry = {
            "event": "final",
            "at": utcnow(),
            "active_s": round(times.case_s, 3),
            "voxels": voxels,
            "sha256": report["sha256"],
        }
        proposed = session._proposalMask(structure.id) if state.ai is not None else None
        if proposed is not None:
            session._settleProposal(structure.id)
            recorded = AI_STATES.get(state.edit, prov.SUGGESTED)
            statistics = prov.ai_vs_final(proposed, final, spacing, recorded)
            if not state.absent:
                report["state"] = statistics["state"]
            segment = session.segmentationNode.GetSegmentation().GetSegment(segments[structure.id])
            segment.SetTag(prov.STATE_TAG, statistics["state"])
            report["provenance"] = {**state.ai, "state": statistics["state"]}
            report["ai_vs_final"] = statistics
            final_entry.update(
                {k: statistics[k] for k in ("state", "dice", "hd95_mm", "voxels_added", "voxels_removed")}
            )
        else:
            report["provenance"] = None
        final_entry["state"] = report["state"]
        report["history"] = [dict(e) for e in state.history] + [final_entry]
        reports[structure.id] = report
    with session._quiet():
        path = saveSegmentation(session.segmentationNode, Path(out_dir) / f"{fileNameFor(session.name)}.seg.nrrd")
    metadata = {
        "time_spent_s": round(times.case_s, 1),
        "client": CLIENT,
        "segments": reports,
        "overrides": session.overrides,
        "answers": dict(session.answers),
        "timing": {**times.to_json(), "idle_after_s": session.activity.idle_after_s},
        "protocol": {
            "id": session.protocol.id,
            "version": session.protocol.version,
            "checksum": session.protocol.checksum,
        },
        "case": {
            "name": session.name,
            "image": session.imagePath.name,
            "task": {k: v for k, v in session.task_info.items() if k != "lease_id"},
        },
        "ai": [dict(s) for s in session.ai_sources],
        "gate": {"ready": check.ready, "failures": [f.to_json() for f in check.failures]},
    }
    return path, metadata


def fileNameFor(name: str) -> str:
    """A plain file name from a case name (the server refuses paths)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "case"
