"""audit chains per project, and the counter of token and role changes

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

GENESIS = "0" * 64
_COLUMNS = "seq, at, actor, action, entity, entity_id, project_id, before_json, after_json, prev_hash, hash"


def _events_table(name: str, chained: bool) -> None:
    columns = [sa.Column("chain", sa.Integer(), server_default="0", autoincrement=False, nullable=False)]
    columns = columns if chained else []
    op.create_table(
        name,
        *columns,
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("at", sa.String(length=32), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=48), nullable=False),
        sa.Column("entity", sa.String(length=24), nullable=False),
        sa.Column("entity_id", sa.String(length=64), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=True),
        sa.Column("before_json", sa.Text(), nullable=False),
        sa.Column("after_json", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("chain", "seq") if chained else sa.PrimaryKeyConstraint("seq"),
    )


def _primary_key(chained: bool) -> None:
    """``audit_events`` keyed by (chain, seq), or back to seq alone; rows, hashes and order unchanged."""
    if op.get_bind().dialect.name == "postgresql":
        if chained:
            op.add_column("audit_events", sa.Column("chain", sa.Integer(), server_default="0", nullable=False))
        op.drop_constraint("audit_events_pkey", "audit_events", type_="primary")
        op.create_primary_key("audit_events_pkey", "audit_events", ["chain", "seq"] if chained else ["seq"])
        if not chained:
            op.drop_column("audit_events", "chain")
        return
    # SQLite cannot change a primary key: the rows move to a new table, as batch mode would move them
    _events_table("_audit_events_0006", chained)
    op.execute(f"INSERT INTO _audit_events_0006 ({_COLUMNS}) SELECT {_COLUMNS} FROM audit_events")
    op.drop_index("ix_audit_events_project_id", table_name="audit_events")
    op.drop_table("audit_events")
    op.rename_table("_audit_events_0006", "audit_events")
    op.create_index("ix_audit_events_project_id", "audit_events", ["project_id"], unique=False)


def upgrade() -> None:
    op.create_table(
        "audit_project_heads",
        sa.Column("project_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("base", sa.BigInteger(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("project_id"),
    )
    op.create_table(
        "auth_epoch",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.execute("INSERT INTO auth_epoch (id, epoch) VALUES (1, 0)")
    # every existing row stays in the server-wide chain 0: its hashes and its checkpoints hold as they were
    _primary_key(chained=True)
    # each existing project's chain starts after chain 0's last row: a project's old and new events stay in
    # seq order (GET .../audit pages by seq)
    op.execute(
        "INSERT INTO audit_project_heads (project_id, base, seq, hash) "
        f"SELECT projects.id, audit_head.seq, audit_head.seq, '{GENESIS}' FROM projects, audit_head "
        "WHERE audit_head.id = 1"
    )


def downgrade() -> None:
    # only a database without project chains goes back: their rows would collide with chain 0's numbers
    rows = op.get_bind().execute(sa.text("SELECT COUNT(*) FROM audit_events WHERE chain <> 0")).scalar_one()
    if rows:
        raise RuntimeError(f"{rows} audit rows are in project chains: revision 0005 cannot hold them")
    _primary_key(chained=False)
    op.drop_table("auth_epoch")
    op.drop_table("audit_project_heads")
