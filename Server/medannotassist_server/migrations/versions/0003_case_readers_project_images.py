"""case readers (separation of duties, blinding per case) and project images (an image is reached only
through a project that uploaded it)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "case_readers",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"]),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("user_id", "case_id"),
    )
    op.create_table(
        "project_images",
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("image_sha256", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["image_sha256"], ["images.sha256"]),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"]),
        sa.PrimaryKeyConstraint("project_id", "image_sha256"),
    )
    # what the existing rows tell: readers are the current holders, assignees and submitters of annotate
    # tasks (a reader who released before this upgrade is not known); a project's images are its cases'
    # (an image uploaded but not yet in a case is the project's again once uploaded again)
    op.execute(
        "INSERT INTO case_readers (user_id, case_id) "
        "SELECT holder_id, case_id FROM tasks WHERE kind = 'annotate' AND holder_id IS NOT NULL "
        "UNION SELECT assignee_id, case_id FROM tasks WHERE kind = 'annotate' AND assignee_id IS NOT NULL "
        "UNION SELECT reader_id, case_id FROM submissions"
    )
    op.execute(
        "INSERT INTO project_images (project_id, image_sha256) "
        "SELECT DISTINCT project_id, image_sha256 FROM cases WHERE image_sha256 IS NOT NULL"
    )


def downgrade() -> None:
    op.drop_table("project_images")
    op.drop_table("case_readers")
