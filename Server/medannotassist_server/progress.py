"""Project progress for dashboards: cases and tasks by state, and per reader throughput and agreement.

``left_out``: the cases the caller reads and that are not approved (a SELECT of their ids), counted apart
and left out of every figure, so a dashboard does not tell a reader about their case's other readers."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from datetime import timedelta

from sqlalchemy import func, select

from . import jobs, protocol_rules
from .models import LEASED, Case, ConsensusResult, Review, Submission, Task, User, utcnow


def progress(session, project_id: int, left_out=None) -> dict:
    now = utcnow()
    blinded = 0
    if left_out is not None:
        blinded = session.execute(select(func.count()).select_from(left_out.subquery())).scalar()

    def shown(query, case_id):
        return query.where(case_id.not_in(left_out)) if blinded else query

    cases = dict(
        session.execute(
            shown(select(Case.state, func.count()).where(Case.project_id == project_id), Case.id).group_by(Case.state)
        ).all()
    )
    tasks: dict[str, dict[str, int]] = defaultdict(dict)
    for kind, state, count in session.execute(
        shown(select(Task.kind, Task.state, func.count()).where(Task.project_id == project_id), Task.case_id).group_by(
            Task.kind, Task.state
        )
    ):
        tasks[kind][state] = count
    # an expired lease is claimable again: dashboards count it apart from live leases
    expired = select(Task.kind, func.count()).where(
        Task.project_id == project_id, Task.state == LEASED, Task.lease_expires_at < now
    )
    for kind, count in session.execute(shown(expired, Task.case_id).group_by(Task.kind)):
        tasks[kind][LEASED] -= count
        tasks[kind]["lease_expired"] = count
    readers: dict[str, dict] = {}
    day_ago = now - timedelta(days=1)
    submissions = session.execute(
        shown(
            select(User.name, Submission.created_at, Submission.metadata_json, Submission.overrides_json)
            .join(User, User.id == Submission.reader_id)
            .where(Submission.project_id == project_id),
            Submission.case_id,
        )
    ).all()
    times: dict[str, list[float]] = defaultdict(list)
    for name, created, metadata, overrides in submissions:
        entry = readers.setdefault(name, {"reader": name, "submissions": 0, "last_24h": 0, "overrides": 0})
        entry["submissions"] += 1
        entry["overrides"] += len(json.loads(overrides))
        entry["last_24h"] += created >= day_ago
        spent = json.loads(metadata).get("time_spent_s")
        if isinstance(spent, (int, float)):
            times[name].append(float(spent))
    dice: dict[str, list[float]] = defaultdict(list)
    agreements = session.execute(
        shown(
            select(ConsensusResult.agreement_json)
            .join(Case, Case.id == ConsensusResult.case_id)
            .where(Case.project_id == project_id),
            Case.id,
        )
    ).scalars()
    for text in agreements:
        for structure in json.loads(text).get("structures", {}).values():
            for pair in structure.get("pairwise", []):
                value = pair.get("dice")
                if isinstance(value, (int, float)):
                    dice[pair["a"]].append(float(value))
                    dice[pair["b"]].append(float(value))
    for name, entry in readers.items():
        spent = times.get(name, [])
        entry["median_time_s"] = statistics.median(spent) if spent else None
        entry["total_time_s"] = sum(spent)
        entry["per_hour"] = round(3600.0 * len(spent) / sum(spent), 3) if spent and sum(spent) > 0 else None
        entry["mean_dice_with_other_readers"] = round(statistics.fmean(dice[name]), 4) if dice.get(name) else None
    return {
        "project_id": project_id,
        "cases": {"total": sum(cases.values()), **cases},
        "blinded_cases": blinded,
        "tasks": dict(tasks),
        "readers": sorted(readers.values(), key=lambda r: r["reader"]),
        "overrides": _overrides(session, project_id, [row[3] for row in submissions]),
        "consensus_jobs": jobs.counts(session, project_id),
        "at": now.isoformat() + "Z",
    }


def _overrides(session, project_id: int, submitted: list[str]) -> dict:
    """Blocking rules kept with a reason: by readers in their submissions, by reviewers in approved finals."""
    reviewed = session.execute(
        select(Review.overrides_json).join(Case, Case.id == Review.case_id).where(Case.project_id == project_id)
    ).scalars()
    return {"submissions": protocol_rules.count(submitted), "reviews": protocol_rules.count(reviewed)}
