"""keyed audit chain: the boundary of the unkeyed rows and the key's id on the head

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_head") as batch:
        batch.add_column(sa.Column("keyed_from", sa.BigInteger(), nullable=False, server_default="1"))
        batch.add_column(sa.Column("key_id", sa.String(length=16), nullable=True))
    # rows made before this revision keep their SHA-256 hashes; every later row is keyed (HMAC). The first
    # start binds the key and signs a checkpoint of this head, which seals the unkeyed rows (see audit_keys)
    op.execute("UPDATE audit_head SET keyed_from = seq + 1")


def downgrade() -> None:
    with op.batch_alter_table("audit_head") as batch:
        batch.drop_column("key_id")
        batch.drop_column("keyed_from")
