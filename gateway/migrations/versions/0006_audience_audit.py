"""The release audit of audience exports: one row per export, one per subject released in it.

Revision ID: 0002_audience_audit
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_audience_audit"
down_revision = "0005_client_lifecycle"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audience_release",
        sa.Column("release_id", sa.String(36), primary_key=True),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("purpose", sa.String(100), nullable=False),
        sa.Column("segment", sa.String(64), nullable=True),
        sa.Column("resumed_after", sa.String(64), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "audience_release_subject",
        sa.Column("release_id", sa.String(36), primary_key=True),
        sa.Column("subject_id", sa.String(64), primary_key=True),
        sa.Column("released", sa.JSON(), nullable=False),
        sa.Column("withheld", sa.JSON(), nullable=False),
        sa.Column("consent_event_id", sa.String(36), nullable=True),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_audience_release_subject_subject_id", "audience_release_subject", ["subject_id"])


def downgrade() -> None:
    op.drop_index("ix_audience_release_subject_subject_id", "audience_release_subject")
    op.drop_table("audience_release_subject")
    op.drop_table("audience_release")
