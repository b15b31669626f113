"""Separation of duties and blinding per case.

Whoever holds or held an annotate task of a case (a row of ``case_readers``, written at claim time) sees
only their own work on that case until it is approved, whatever other roles they have (reviewer, admin,
site admin), and never claims or decides its review. Reviewers and admins who did not read a case see
every reader's work on it; annotators see others' work once the case is approved.
"""

from __future__ import annotations

from functools import cache

from sqlalchemy import bindparam, select

from .auth import Caller, ProjectAccess
from .db import insert_new
from .errors import ApiError
from .models import APPROVED, REVIEWER, Case, CaseReader


@cache
def record_reader(postgres: bool):
    """The claim's one extra statement: remember the reader of ``:case_id`` (built once per dialect)."""
    return insert_new(CaseReader, postgres).values(user_id=bindparam("user_id"), case_id=bindparam("case_id"))


def reads_case(session, user_id: int, case_id: int) -> bool:
    return session.get(CaseReader, (user_id, case_id)) is not None


def cases_read(session, user_id: int, case_ids: list[int]) -> set[int]:
    """Which of ``case_ids`` the user reads."""
    found: set[int] = set()
    for start in range(0, len(case_ids), 500):
        chunk = case_ids[start : start + 500]
        found.update(
            session.execute(
                select(CaseReader.case_id).where(CaseReader.user_id == user_id, CaseReader.case_id.in_(chunk))
            ).scalars()
        )
    return found


def sees_others(access: ProjectAccess, case: Case, reads: bool) -> bool:
    """May the caller see other readers' work, the consensus and the final of ``case``?"""
    return case.state == APPROVED or (access.has(REVIEWER) and not reads)


def may_see_others(session, access: ProjectAccess, case: Case) -> bool:
    """``sees_others``, looking up whether the caller reads the case only when it matters."""
    if case.state == APPROVED or not access.has(REVIEWER):
        return case.state == APPROVED
    return not reads_case(session, access.caller.id, case.id)


def blinded_case_ids(user_id: int, project_id: int):
    """The cases of a project the user reads and that are not approved yet (a SELECT of their ids)."""
    return (
        select(CaseReader.case_id)
        .join(Case, Case.id == CaseReader.case_id)
        .where(CaseReader.user_id == user_id, Case.project_id == project_id, Case.state != APPROVED)
    )


def refuse_own_review(session, caller: Caller, case_id: int) -> None:
    if reads_case(session, caller.id, case_id):
        raise ApiError(
            403,
            "reader_cannot_review",
            f"you read case {case_id} (one of its annotate tasks was yours): another reviewer decides it; "
            "release this task",
        )
