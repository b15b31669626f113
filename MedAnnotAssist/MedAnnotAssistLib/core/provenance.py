"""What the AI proposed and what the human made of it: segment tags and AI-vs-final statistics.

Each AI segment carries its engine, version, parameters, time and confidence, and a review state:
``suggested`` (as the engine left it), ``accepted`` (kept unchanged), ``rejected`` (removed) or
``refined`` (kept and edited). On submission, per structure, the proposal is compared with the final
mask: Dice, HD95, voxels added and removed. These numbers go into the submission metadata.
"""

from __future__ import annotations

import hashlib
import json
from urllib.parse import quote, unquote

import numpy as np

from .metrics import pairwise_metrics

PREFIX = "MedAnnotAssist.AI."
ENGINE_TAG, VERSION_TAG, PARAMETERS_TAG = PREFIX + "Engine", PREFIX + "Version", PREFIX + "Parameters"
TIME_TAG, CONFIDENCE_TAG, STATE_TAG = PREFIX + "Time", PREFIX + "Confidence", PREFIX + "State"
SUGGESTED, ACCEPTED, REJECTED, REFINED = "suggested", "accepted", "rejected", "refined"
STATES = (SUGGESTED, ACCEPTED, REJECTED, REFINED)


def provenance_tags(provenance: dict, confidence: float | None, state: str = SUGGESTED) -> dict[str, str]:
    """Segment tags for one AI segment. Values are percent-encoded where Slicer's tag syntax (``key:value|``)
    would break them."""
    if state not in STATES:
        raise ValueError(f"state: expected one of {', '.join(STATES)}, got {state!r}")
    return {
        ENGINE_TAG: provenance["engine"],
        VERSION_TAG: provenance["version"],
        PARAMETERS_TAG: quote(json.dumps(provenance.get("parameters", {}), sort_keys=True), safe=""),
        TIME_TAG: provenance.get("started", ""),
        CONFIDENCE_TAG: "" if confidence is None else f"{confidence:.4f}",
        STATE_TAG: state,
    }


def read_provenance(tags: dict[str, str]) -> dict | None:
    """The provenance stored in a segment's tags, or None for a segment no engine proposed."""
    if ENGINE_TAG not in tags:
        return None
    confidence = tags.get(CONFIDENCE_TAG) or None
    return {
        "engine": tags[ENGINE_TAG],
        "version": tags.get(VERSION_TAG, ""),
        "parameters": json.loads(unquote(tags.get(PARAMETERS_TAG) or "%7B%7D")),
        "started": tags.get(TIME_TAG, ""),
        "confidence": float(confidence) if confidence else None,
        "state": tags.get(STATE_TAG, SUGGESTED),
    }


def ai_vs_final(proposal: np.ndarray, final: np.ndarray, spacing, state: str) -> dict:
    """Compare the AI's proposal with the submitted mask of one structure.

    ``state`` is the recorded review state; an ``accepted`` or ``suggested`` segment whose voxels changed is
    reported as ``refined``, and a changed ``rejected`` one (the expert drew it anew) as ``refined`` too.
    """
    proposal, final = np.asarray(proposal, bool), np.asarray(final, bool)
    if proposal.shape != final.shape:
        raise ValueError(f"proposal shape {proposal.shape} differs from the final mask's {final.shape}")
    added = int(np.count_nonzero(final & ~proposal))
    removed = int(np.count_nonzero(proposal & ~final))
    if state == REJECTED and not final.any():
        effective = REJECTED
    elif added or removed:
        effective = REFINED
    else:
        effective = ACCEPTED if state in (ACCEPTED, REFINED) else state
    [pair] = pairwise_metrics([proposal, final], spacing, ["ai", "final"])
    unit = float(np.prod(spacing)) / 1000.0
    return {
        "state": effective,
        "dice": pair.dice,
        "hd95_mm": None if not np.isfinite(pair.hd95_mm) else pair.hd95_mm,
        "voxels_added": added,
        "voxels_removed": removed,
        "ai_volume_ml": round(int(np.count_nonzero(proposal)) * unit, 4),
        "final_volume_ml": round(int(np.count_nonzero(final)) * unit, 4),
    }


def mask_sha256(mask: np.ndarray) -> str:
    """A fingerprint of a mask on its grid (shape and voxels): equal fingerprints, equal masks."""
    mask = np.asarray(mask, bool)
    digest = hashlib.sha256(("x".join(map(str, mask.shape)) + ";").encode())
    digest.update(np.packbits(mask, axis=None).tobytes())
    return digest.hexdigest()
