"""Consent ledger (hash-chained per subject, append-only), chain heads and derived current state.

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_REFUSAL = "the consent ledger is append-only"

_POSTGRES_FUNCTION = f"""
CREATE FUNCTION consent_event_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM ledger_erasure_permit) THEN
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    RAISE EXCEPTION '{_REFUSAL}: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END;
$$
"""


def _create_triggers() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_POSTGRES_FUNCTION)
        op.execute(
            "CREATE TRIGGER consent_event_append_only BEFORE UPDATE OR DELETE ON consent_event "
            "FOR EACH ROW EXECUTE FUNCTION consent_event_append_only()"
        )
        return
    for operation in ("UPDATE", "DELETE"):
        op.execute(
            f"CREATE TRIGGER consent_event_no_{operation.lower()} BEFORE {operation} ON consent_event "
            f"WHEN NOT EXISTS (SELECT 1 FROM ledger_erasure_permit) "
            f"BEGIN SELECT RAISE(ABORT, '{_REFUSAL}: {operation} refused'); END"
        )


def upgrade() -> None:
    op.create_table(
        "ledger_erasure_permit",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("reason", sa.String(200), nullable=False),
    )
    op.create_table(
        "consent_chain",
        sa.Column("chain_id", sa.String(36), primary_key=True),
        sa.Column("subject_id", sa.String(64), nullable=True, unique=True),
        sa.Column("length", sa.Integer(), nullable=False),
        sa.Column("head_hash", sa.String(64), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "consent_event",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("chain_id", sa.String(36), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("subject_id", sa.String(64), nullable=True),
        sa.Column("purpose", sa.String(100), nullable=False),
        sa.Column("action", sa.String(20), nullable=False),
        sa.Column("notice_version", sa.Integer(), nullable=True),
        sa.Column("source", sa.String(80), nullable=False),
        sa.Column("collected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=True),
        sa.Column("personal_salt", sa.String(32), nullable=True),
        sa.Column("personal_digest", sa.String(64), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.UniqueConstraint("chain_id", "seq", name="uq_consent_event_chain_seq"),
    )
    op.create_index("ix_consent_event_subject_id", "consent_event", ["subject_id"])
    op.create_table(
        "consent_state",
        sa.Column("subject_id", sa.String(64), primary_key=True),
        sa.Column("purpose", sa.String(100), primary_key=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("notice_version", sa.Integer(), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
    )
    _create_triggers()


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS consent_event_append_only ON consent_event")
        op.execute("DROP FUNCTION IF EXISTS consent_event_append_only()")
    op.drop_table("consent_state")
    op.drop_index("ix_consent_event_subject_id", "consent_event")
    op.drop_table("consent_event")
    op.drop_table("consent_chain")
    op.drop_table("ledger_erasure_permit")
