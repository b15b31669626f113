"""The queue's tables. Times are naive UTC; JSON documents are stored as text so SQLite and PostgreSQL
hold the same bytes (the audit chain hashes them)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Roles a project membership can hold.
ANNOTATOR, REVIEWER, ADMIN = "annotator", "reviewer", "admin"
ROLES = (ANNOTATOR, REVIEWER, ADMIN)

# Task kinds and states.
ANNOTATE, REVIEW = "annotate", "review"
QUEUED, LEASED, SUBMITTED, CLOSED = "queued", "leased", "submitted", "closed"

# Case states.
ANNOTATING, IN_REVIEW, APPROVED = "annotating", "review", "approved"

# Job kinds and states: server-side work a worker takes from the jobs table (a request never waits for it).
CONSENSUS = "consensus"
JOB_QUEUED, JOB_RUNNING, JOB_DONE, JOB_FAILED = "queued", "running", "done", "failed"


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str | None] = mapped_column(String(254))
    # a site admin creates projects and users; project roles come from memberships
    is_site_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    # SHA-256 of the token: the token itself is shown once and never stored
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime)


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    protocol_id: Mapped[str] = mapped_column(String(64))
    protocol_version: Mapped[str] = mapped_column(String(32))
    protocol_checksum: Mapped[str] = mapped_column(String(64))
    protocol_json: Mapped[str] = mapped_column(Text)
    readers_per_case: Mapped[int] = mapped_column(Integer)
    review_enabled: Mapped[bool] = mapped_column(Boolean)
    created_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Membership(Base):
    __tablename__ = "memberships"

    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True, index=True)
    role: Mapped[str] = mapped_column(String(16), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Image(Base):
    """An uploaded case image, stored once by content; many cases may share it."""

    __tablename__ = "images"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    suffix: Mapped[str] = mapped_column(String(16))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    geometry_json: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class ProjectImage(Base):
    """An image a project may use: images are stored once by content, but reached only through a project
    that uploaded them (so one project's image sha256 is of no use in another)."""

    __tablename__ = "project_images"

    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), primary_key=True)
    image_sha256: Mapped[str] = mapped_column(ForeignKey("images.sha256"), primary_key=True)


class Case(Base):
    __tablename__ = "cases"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    image_sha256: Mapped[str | None] = mapped_column(ForeignKey("images.sha256"))
    # {"url", "study_uid", "series_uid"}: retrieved later through MedAnnotAssistLib.core.dicom.web
    dicomweb_json: Mapped[str | None] = mapped_column(Text)
    priority: Mapped[float] = mapped_column(Float, default=0.0)
    state: Mapped[str] = mapped_column(String(16), default=ANNOTATING)
    round: Mapped[int] = mapped_column(Integer, default=1)
    ai_seg_sha256: Mapped[str | None] = mapped_column(String(64))
    ai_uncertainty: Mapped[float | None] = mapped_column(Float)
    ai_json: Mapped[str | None] = mapped_column(Text)
    final_sha256: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Task(Base):
    __tablename__ = "tasks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    kind: Mapped[str] = mapped_column(String(8))
    state: Mapped[str] = mapped_column(String(12), default=QUEUED)
    priority: Mapped[float] = mapped_column(Float, default=0.0)
    round: Mapped[int] = mapped_column(Integer, default=1)
    # after a review returns the case, the task is reserved for the reader who did it
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    # who holds (or last held) the lease; for a submitted task, its reader
    holder_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    # the fencing token: a new one on every claim, required by heartbeat, release and submit
    lease_id: Mapped[str | None] = mapped_column(String(36))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime)
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime)
    submitted_at: Mapped[datetime | None] = mapped_column(DateTime)
    comment: Mapped[str | None] = mapped_column(Text)  # the reviewer's note when returned
    draft_sha256: Mapped[str | None] = mapped_column(String(64))  # a reviewer's edited final
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


# claims walk this index: one (project, kind, state), priority high to low, then oldest first
Index("ix_tasks_queue", Task.project_id, Task.kind, Task.state, Task.priority.desc(), Task.created_at, Task.id)


class CaseReader(Base):
    """Who ever leased an annotate task of a case: blind to its other readers until approval, never its
    reviewer. A row per (reader, case), written at claim time, because ``Task.holder_id`` forgets a reader
    on release, expiry and re-claim."""

    __tablename__ = "case_readers"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), primary_key=True)


class Submission(Base):
    __tablename__ = "submissions"
    __table_args__ = (UniqueConstraint("reader_id", "idempotency_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), index=True)
    reader_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    round: Mapped[int] = mapped_column(Integer)
    version: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    metadata_json: Mapped[str] = mapped_column(Text)
    # the blocking rules it fails, each with the reader's reason to keep it (protocol_rules)
    overrides_json: Mapped[str] = mapped_column(Text, default="[]", server_default="[]")
    idempotency_key: Mapped[str | None] = mapped_column(String(128))
    request_sha256: Mapped[str] = mapped_column(String(64))
    response_json: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class ConsensusResult(Base):
    __tablename__ = "consensus_results"
    __table_args__ = (UniqueConstraint("case_id", "round"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"))
    round: Mapped[int] = mapped_column(Integer)
    consensus_sha256: Mapped[str] = mapped_column(String(64))
    disagreement_sha256: Mapped[str] = mapped_column(String(64))
    report_sha256: Mapped[str | None] = mapped_column(String(64))
    agreement_json: Mapped[str] = mapped_column(Text)
    submission_ids_json: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Job(Base):
    """Server-side work (a case's consensus of one round), taken by one worker at a time under a lease."""

    __tablename__ = "jobs"
    __table_args__ = (UniqueConstraint("kind", "case_id", "round"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"))
    round: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(12), default=JOB_QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)  # the last attempt's failure, short, no server paths
    # the worker holding (or that last held) the job; a running job whose lease expired is taken again
    worker: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime)
    run_after: Mapped[datetime] = mapped_column(DateTime, default=utcnow)  # the backoff after a failure
    queued_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)  # of the latest attempt
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)


# workers look for queued jobs that are due, and running ones whose lease expired
Index("ix_jobs_takeable", Job.state, Job.run_after)


class Review(Base):
    __tablename__ = "reviews"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"))
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    round: Mapped[int] = mapped_column(Integer)
    decision: Mapped[str] = mapped_column(String(16))  # approve | return
    structures_json: Mapped[str] = mapped_column(Text)
    returns_json: Mapped[str] = mapped_column(Text)
    final_sha256: Mapped[str | None] = mapped_column(String(64))
    # the blocking rules the approved final fails, each with the reviewer's reason to keep it
    overrides_json: Mapped[str] = mapped_column(Text, default="[]", server_default="[]")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Export(Base):
    __tablename__ = "exports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    format: Mapped[str] = mapped_column(String(16))
    created_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    archive_sha256: Mapped[str] = mapped_column(String(64))
    case_count: Mapped[int] = mapped_column(Integer)
    manifest_json: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class AuditEvent(Base):
    """One state change; ``hash`` (HMAC with the server's audit key) covers every field and the previous
    row's hash. ``chain``: 0 for the server-wide chain (events without a project, and every event made
    before revision 0006), else the id of the project whose chain the row is in; ``seq`` counts per chain."""

    __tablename__ = "audit_events"

    chain: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False, server_default="0")
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    at: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(48))
    entity: Mapped[str] = mapped_column(String(24))
    entity_id: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[int | None] = mapped_column(Integer, index=True)
    before_json: Mapped[str] = mapped_column(Text)
    after_json: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """The chain's last sequence number and hash: one row, locked by every writer, so replicas append in
    one order and a deleted last row shows. Rows before ``keyed_from`` were hashed without a key (made
    before revision 0004); ``key_id`` names the key the chain is bound to."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
    keyed_from: Mapped[int] = mapped_column(BigInteger, server_default="1")
    key_id: Mapped[str | None] = mapped_column(String(16))


class AuditProjectHead(Base):
    """The last row of one project's audit chain: locked by that project's writers only, so one project's
    writes never wait on another's. Its rows are numbered from ``base + 1`` (a project that existed before
    revision 0006 continues after the server-wide chain's rows, so its events stay in ``seq`` order)."""

    __tablename__ = "audit_project_heads"

    project_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    base: Mapped[int] = mapped_column(BigInteger)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))


class AuthEpoch(Base):
    """One counter, raised in the transaction of every token revocation and role change: a server process
    trusts the tokens and roles it cached only while the counter it read in the same transaction is unchanged."""

    __tablename__ = "auth_epoch"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    epoch: Mapped[int] = mapped_column(BigInteger)
