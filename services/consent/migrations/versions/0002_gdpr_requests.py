"""GDPR data-subject requests and the history of each (see services/consent/requests).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gdpr_request",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("subject_id", sa.String(64), nullable=False),
        sa.Column("type", sa.String(20), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("channel", sa.String(40), nullable=False),
        sa.Column("details", sa.String(2000), nullable=True),
        sa.Column("purposes", sa.JSON(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("extension_months", sa.Integer(), nullable=True),
        sa.Column("extension_reason", sa.String(1000), nullable=True),
        sa.Column("extended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("extended_by", sa.String(120), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolution", sa.String(1000), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_gdpr_request_subject_id", "gdpr_request", ["subject_id"])
    op.create_index("ix_gdpr_request_received", "gdpr_request", ["received_at", "id"])
    op.create_index("ix_gdpr_request_status_due", "gdpr_request", ["status", "due_at"])
    op.create_table(
        "gdpr_request_history",
        sa.Column(
            "request_id",
            sa.String(36),
            sa.ForeignKey("gdpr_request.id", name="fk_gdpr_request_history_request"),
            primary_key=True,
        ),
        sa.Column("seq", sa.Integer(), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(120), nullable=False),
        sa.Column("action", sa.String(20), nullable=False),
        sa.Column("from_status", sa.String(20), nullable=True),
        sa.Column("to_status", sa.String(20), nullable=False),
        sa.Column("note", sa.String(1000), nullable=True),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("gdpr_request_history")
    op.drop_index("ix_gdpr_request_status_due", "gdpr_request")
    op.drop_index("ix_gdpr_request_received", "gdpr_request")
    op.drop_index("ix_gdpr_request_subject_id", "gdpr_request")
    op.drop_table("gdpr_request")
