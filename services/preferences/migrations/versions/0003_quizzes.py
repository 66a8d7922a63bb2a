"""Quiz definitions added through the API, quiz sessions and anonymous quiz counters.

Revision ID: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "quiz_definition",
        sa.Column("quiz_id", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer(), primary_key=True),
        sa.Column("definition", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "quiz_session",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("subject_id", sa.String(64), nullable=False),
        sa.Column("quiz_id", sa.String(64), nullable=False),
        sa.Column("quiz_version", sa.Integer(), nullable=False),
        sa.Column("locale", sa.String(2), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("current_question", sa.String(64), nullable=True),
        sa.Column("last_question", sa.String(64), nullable=True),
        sa.Column("answers", sa.JSON(), nullable=False),
        sa.Column("traits", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_quiz_session_subject", "quiz_session", ["subject_id"])
    op.create_table(
        "quiz_counter",
        sa.Column("quiz_id", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer(), primary_key=True),
        sa.Column("metric", sa.String(16), primary_key=True),
        sa.Column("question_id", sa.String(64), primary_key=True),
        sa.Column("bucket", sa.String(64), primary_key=True),
        sa.Column("count", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("quiz_counter")
    op.drop_index("ix_quiz_session_subject", table_name="quiz_session")
    op.drop_table("quiz_session")
    op.drop_table("quiz_definition")
