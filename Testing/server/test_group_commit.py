"""The group-commit writer in this process, on SQLite and PostgreSQL: a batch is one transaction whose
refusals change nothing, a failing operation fails alone, a failed commit is never acknowledged, a
revocation committed before a batch is seen by it, and relaxed durability keeps submissions durable and
checkpoints to rows that are."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import pytest
from sqlalchemy import select, text

from medannotassist_server import accounts, audit, group_commit
from medannotassist_server.audit_keys import AuditChain
from medannotassist_server.auth import issue_token, token_hash
from medannotassist_server.db import Database, migrate
from medannotassist_server.errors import ApiError
from medannotassist_server.group_commit import GroupCommit, Op
from medannotassist_server.models import Case, Membership, Project, Task, User

from .conftest import BACKENDS

TASKS = 6


@pytest.fixture(params=BACKENDS)
def site(request, database_for, tmp_path):
    url = database_for(request.param) or f"sqlite:///{tmp_path / 'queue.sqlite3'}"
    migrate(url)
    chain = AuditChain(tmp_path / "audit.key", tmp_path / "audit-checkpoints.jsonl", every_rows=1, every_seconds=3600)
    database = Database(url, chain)
    audit.bind_key(database)
    with database.writing() as session:
        users = [User(name=name) for name in ("ann", "bob")]
        session.add_all(users)
        session.flush()
        tokens = [issue_token(session, user)[0] for user in users]
        project = Project(
            name="p", protocol_id="x", protocol_version="1", protocol_checksum="c", protocol_json="{}",
            readers_per_case=1, review_enabled=False, created_by=users[0].id,
        )  # fmt: skip
        session.add(project)
        session.flush()
        session.add_all(Membership(project_id=project.id, user_id=user.id, role="annotator") for user in users)
        for index in range(TASKS):
            case = Case(project_id=project.id, name=f"c{index}")
            session.add(case)
            session.flush()
            session.add(Task(project_id=project.id, case_id=case.id, kind="annotate"))
        project_id = project.id
    yield SimpleNamespace(
        database=database, url=url, project=project_id, tokens=[token_hash(t) for t in tokens], users=users
    )
    database.dispose()


def _op(site, name: str, *args, user: int = 0) -> Op:
    return Op(name, site.tokens[user], site.project, args)


def _claim(site, user: int = 0) -> Op:
    return _op(site, "claim", None, 300.0, user=user)


def _wait(op: Op):
    op.done.wait(30)
    return op.outcome


def _run(writer: GroupCommit, ops: list[Op]) -> None:
    """One batch, exactly these operations, in this thread (the writer thread's own step)."""
    for op in ops:
        op.done = group_commit.threading.Event()
    writer._run(ops)


def _verify(site) -> audit.AuditVerdict:
    with site.database.reading() as session:
        return audit.verify(session, site.database.chain)


def test_a_batch_commits_together_and_its_refusals_change_nothing(site):
    writer = GroupCommit(site.database)
    ops = [_claim(site), _claim(site, user=1), _op(site, "release", 10**6, "nope", None), _claim(site)]
    _run(writer, ops)
    first, second, refused, third = (_wait(op) for op in ops)
    assert refused.code == "task_not_found" and ops[2].failed
    leases = [first["task"], second["task"], third["task"]]
    assert all(type(task["priority"]) is float for task in leases)  # as SQLAlchemy read it (SQLite's RETURNING: 0)
    assert len({task["id"] for task in leases}) == 3 and len({task["lease_id"] for task in leases}) == 3
    # the release in the next batch sees the claim of this one; the heartbeat of a released lease is refused
    task = first["task"]
    release = _op(site, "release", task["id"], task["lease_id"], "done")
    beat = _op(site, "heartbeat", task["id"], "x", 60.0)
    _run(writer, [release, beat])
    assert _wait(release)["state"] == "queued" and _wait(beat).code == "lease_lost"
    with site.database.reading() as session:
        actions = session.execute(
            text("SELECT action FROM audit_events WHERE chain = :p ORDER BY seq"), {"p": site.project}
        )
        assert [row[0] for row in actions] == ["task.claim"] * 3 + ["task.release"]
    assert _verify(site).ok


def test_a_failing_operation_fails_alone(site, monkeypatch):
    """An operation that raises something other than a refusal, after writing: its batch is rolled back and
    run again one operation per transaction, so only that one fails and its write is gone."""

    def boom(tx, op):
        tx.cursor.execute("UPDATE tasks SET comment = 'boom'")
        raise RuntimeError("a bug")

    monkeypatch.setitem(group_commit._OPERATIONS, "boom", boom)
    writer = GroupCommit(site.database)
    ops = [_claim(site), _op(site, "boom"), _claim(site, user=1)]
    _run(writer, ops)
    assert not ops[0].failed and not ops[2].failed
    assert ops[1].failed and str(ops[1].outcome) == "a bug"
    with site.database.reading() as session:
        assert session.execute(select(Task.id).where(Task.comment == "boom")).first() is None
        leased = session.execute(select(Task.id).where(Task.state == "leased")).scalars().all()
    assert sorted(leased) == sorted([ops[0].outcome["task"]["id"], ops[2].outcome["task"]["id"]])
    assert _verify(site).ok


def test_a_session_step_commits_with_the_batch_and_fails_alone(site):
    """A step in a session (what a submission records) runs in the batch's transaction in a savepoint of
    its own: its writes and audit events commit with the batch, or, when it fails, only its own are undone."""
    writer = GroupCommit(site.database)

    def comment(text_: str, fail: bool = False):
        def step(session):
            session.execute(text("UPDATE tasks SET comment = :c WHERE id = (SELECT MIN(id) FROM tasks)"), {"c": text_})
            audit.record(session, "ann", "task.comment", "task", 1, None, {"comment": text_}, site.project)
            if fail:
                raise RuntimeError("the step failed after writing")
            return text_

        return Op("session", None, 0, (step,))

    ops = [_claim(site), comment("kept"), comment("undone", fail=True), _claim(site, user=1)]
    _run(writer, ops)
    assert [op.failed for op in ops] == [False, False, True, False]
    assert str(ops[2].outcome) == "the step failed after writing" and ops[1].outcome == "kept"
    with site.database.reading() as session:
        assert session.execute(select(Task.comment).where(Task.comment.is_not(None))).scalars().all() == ["kept"]
        query = text("SELECT action FROM audit_events WHERE chain = :p ORDER BY seq")
        actions = [row[0] for row in session.execute(query, {"p": site.project})]
    assert actions == ["task.claim", "task.comment", "task.claim"]
    assert _verify(site).ok


def test_a_failed_commit_is_never_acknowledged(site, monkeypatch):
    writer = GroupCommit(site.database)
    from sqlalchemy.engine import RootTransaction

    def fail(self):
        raise RuntimeError("disk gone during the commit")

    monkeypatch.setattr(RootTransaction, "commit", fail)
    ops = [_claim(site), _claim(site, user=1)]
    _run(writer, ops)
    monkeypatch.undo()
    for op in ops:
        assert op.failed and op.outcome.__class__.__name__ == "OperationalError"  # answered 503, never 200
    with site.database.reading() as session:
        assert session.execute(select(Task.id).where(Task.state == "leased")).first() is None
    assert _verify(site).ok


def test_a_revocation_or_role_change_is_seen_by_the_next_batch(site):
    writer = GroupCommit(site.database)
    task = writer.call_sync(_claim(site))["task"]  # the token and roles are cached now
    assert writer.call_sync(_op(site, "heartbeat", task["id"], task["lease_id"], 60.0))["id"] == task["id"]
    with site.database.writing() as session:
        project = session.get(Project, site.project)
        accounts.set_roles(session, "admin", project, session.get(User, site.users[1].id), [])
    with pytest.raises(ApiError, match="no project") as refused:
        writer.call_sync(_claim(site, user=1))
    assert refused.value.code == "project_not_found"
    with site.database.writing() as session:
        accounts.revoke_tokens(session, "admin", session.get(User, site.users[0].id))
    with pytest.raises(ApiError) as refused:
        writer.call_sync(_op(site, "heartbeat", task["id"], task["lease_id"], 60.0))
    assert refused.value.code == "token_revoked"
    writer.close()


def _checkpointed(site) -> set[int]:
    path = site.database.chain.checkpoint_path
    return {line["seq"] for line in map(json.loads, path.read_text().splitlines()) if line.get("chain") == site.project}


def test_relaxed_durability_keeps_other_writes_durable_and_checkpoints_only_durable_rows(site):
    writer = GroupCommit(site.database, durability="relaxed")
    writer.call_sync(_claim(site))
    # the claim's row is committed but not known durable: no checkpoint names it yet
    assert _checkpointed(site) == set()
    with site.database.writing() as session:  # what a submission's transaction runs with
        if site.database.is_sqlite:
            assert session.execute(text("PRAGMA synchronous")).scalar_one() == 2  # FULL
        else:
            assert session.execute(text("SHOW synchronous_commit")).scalar_one() == "on"
    deadline = time.monotonic() + 5
    while not _checkpointed(site) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _checkpointed(site) == {1}, "the durable barrier did not follow"
    writer.call_sync(_claim(site))
    writer.close()  # shutdown: the barrier comes first, then the checkpoint
    assert _checkpointed(site) == {1, 2}
    # a session step (a submission) is durable: its batch checkpoints at once, earlier relaxed rows with it
    writer = GroupCommit(site.database, durability="relaxed")
    writer.call_sync(_claim(site))

    def step(session):
        audit.record(session, "ann", "task.comment", "task", 1, None, {}, site.project)

    writer.write(step)
    assert _checkpointed(site) == {1, 2, 4}
    writer.close()
    assert _verify(site).ok


def test_durability_is_checked(site):
    with pytest.raises(ValueError, match="durability must be one of full, relaxed"):
        GroupCommit(site.database, durability="sometimes")
