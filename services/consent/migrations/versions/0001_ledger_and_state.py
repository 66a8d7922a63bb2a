"""Consent ledger and derived current state.

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "consent_event",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("subject_id", sa.String(64), nullable=False),
        sa.Column("purpose", sa.String(100), nullable=False),
        sa.Column("action", sa.String(20), nullable=False),
        sa.Column("notice_version", sa.Integer(), nullable=True),
        sa.Column("source", sa.String(80), nullable=False),
        sa.Column("collected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
    )
    op.create_index("ix_consent_event_subject_id", "consent_event", ["subject_id"])
    op.create_table(
        "consent_state",
        sa.Column("subject_id", sa.String(64), primary_key=True),
        sa.Column("purpose", sa.String(100), primary_key=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_id", sa.String(36), sa.ForeignKey("consent_event.id"), nullable=False),
        sa.Column("notice_version", sa.Integer(), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("consent_state")
    op.drop_index("ix_consent_event_subject_id", "consent_event")
    op.drop_table("consent_event")
