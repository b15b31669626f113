"""The protocol's blocking rules, enforced on every submission and on the reviewer's approved final.

The rules engine is the client's (``core.protocol_check``), so the server refuses exactly what Slicer
shows as blocking. A failing blocking rule refuses the upload (422 ``protocol_rules_failed``, each
failure listed) unless an override with a reason names its structure, and its rule or no rule (then it
covers every rule of that structure). The overrides that were needed are returned, each with the
failure it covers, to be stored, audited, shown to reviewers and counted in progress; an override of
a rule that passes is accepted and not kept.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable

import numpy as np

from MedAnnotAssistLib.core.labelio import Geometry, ReaderLabels
from MedAnnotAssistLib.core.protocol import Protocol
from MedAnnotAssistLib.core.protocol_check import ABSENT, ProtocolCheck, check_reader

from .errors import ApiError


def failures(check: ProtocolCheck) -> list[dict]:
    """Every blocking result: structure, rule, measured value, what passes and the message readers see."""
    return [
        {
            "structure": s.structure_id,
            "name": s.name,
            "rule": r.rule,
            "measured": r.value,
            "expected": r.expected,
            "message": f"{s.name}: {r.message}",
        }
        for s in check.structures
        for r in s.blocking
    ]


def _known_structures(protocol: Protocol, overrides: Iterable[dict], code: str, where: str) -> None:
    unknown = sorted({o["structure"] for o in overrides} - {s.id for s in protocol.structures})
    if unknown:
        raise ApiError(422, code, f"{where}: not structures of protocol {protocol.label}: {', '.join(unknown)}")


def _covering(overrides: list[dict], failure: dict) -> dict | None:
    """The override of this failure: one naming its rule first, else one naming only its structure."""
    same = [o for o in overrides if o["structure"] == failure["structure"]]
    return next((o for o in same if o.get("rule") == failure["rule"]), None) or next(
        (o for o in same if o.get("rule") is None), None
    )


def enforce(
    protocol: Protocol,
    labels: ReaderLabels,
    overrides: list[dict],
    what: str,
    where: str,
    declared_absent: Collection[str] = (),
) -> list[dict]:
    """The overrides the segmentation needs, each a failure with its ``reason``; a failure that no override
    covers refuses it with 422 ``protocol_rules_failed`` (``what``: the file, ``where``: the overrides' field)."""
    check = check_reader(protocol, labels, declared_absent)
    applied, missing = [], []
    for failure in failures(check):
        override = _covering(overrides, failure)
        if override is None:
            missing.append(failure)
        else:
            applied.append({**failure, "reason": override["reason"]})
    if missing:
        listed = "; ".join(f["message"] for f in missing)
        raise ApiError(
            422,
            "protocol_rules_failed",
            f"{what} fails {len(missing)} blocking rule(s) of protocol {protocol.label}: {listed}. Correct the "
            f"segmentation, or give a reason per structure in {where}",
            failures=missing,
        )
    return applied


def check_submission(protocol: Protocol, labels: ReaderLabels, metadata: dict, filename: str) -> list[dict]:
    """A reader's submission: optional structures whose ``metadata.segments.<id>.state`` is ``absent`` count
    as declared absent, as in Slicer; the reader's overrides come from ``metadata.overrides``."""
    overrides = metadata.get("overrides") or []
    _known_structures(protocol, overrides, "invalid_metadata", "metadata.overrides")
    segments = metadata.get("segments") or {}
    absent = [sid for sid, report in segments.items() if isinstance(report, dict) and report.get("state") == ABSENT]
    return enforce(protocol, labels, overrides, filename, "metadata.overrides", absent)


def check_final(
    protocol: Protocol, labels: np.ndarray, geometry: Geometry, values: dict[str, int], overrides: list[dict]
) -> list[dict]:
    """The reviewer's final (one label layer, ``values``: structure id -> label) with the decision's overrides."""
    _known_structures(protocol, overrides, "unknown_structure", "overrides")
    final = ReaderLabels("final", None, geometry, [labels], {sid: (0, value) for sid, value in values.items()})
    return enforce(protocol, final, overrides, "the approved final segmentation", "the decision's overrides")


def count(overrides_json_rows: Iterable[str]) -> dict:
    """Progress figures of stored overrides: how many, and by structure and rule."""
    total, by_structure, by_rule = 0, {}, {}
    for text in overrides_json_rows:
        for item in json.loads(text or "[]"):
            total += 1
            by_structure[item["structure"]] = by_structure.get(item["structure"], 0) + 1
            by_rule[item["rule"]] = by_rule.get(item["rule"], 0) + 1
    return {"total": total, "by_structure": by_structure, "by_rule": by_rule}
