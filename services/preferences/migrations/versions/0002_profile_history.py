"""Profile change history and the per-subject row that serializes a subject's writers.

Revision ID: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "profile_subject",
        sa.Column("subject_id", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "profile_change",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("subject_id", sa.String(64), nullable=False),
        sa.Column("field", sa.String(64), nullable=False),
        sa.Column("old_value", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("new_value", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("source", sa.String(80), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_profile_change_subject", "profile_change", ["subject_id", "id"])
    # Profiles written before this revision get their subject row; their history starts now.
    op.execute(
        "INSERT INTO profile_subject (subject_id, version, updated_at) "
        "SELECT subject_id, 0, MAX(updated_at) FROM profile_value GROUP BY subject_id"
    )


def downgrade() -> None:
    op.drop_index("ix_profile_change_subject", table_name="profile_change")
    op.drop_table("profile_change")
    op.drop_table("profile_subject")
