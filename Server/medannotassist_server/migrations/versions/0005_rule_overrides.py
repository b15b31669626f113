"""protocol rule overrides of submissions and reviews

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # rows stored before the rules were enforced overrode nothing
    with op.batch_alter_table("submissions") as batch:
        batch.add_column(sa.Column("overrides_json", sa.Text(), server_default="[]", nullable=False))
    with op.batch_alter_table("reviews") as batch:
        batch.add_column(sa.Column("overrides_json", sa.Text(), server_default="[]", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("reviews") as batch:
        batch.drop_column("overrides_json")
    with op.batch_alter_table("submissions") as batch:
        batch.drop_column("overrides_json")
