"""The consent change feed: an outbox row whenever a consent becomes withdrawn, refused or expired.

Triggers on ``consent_state`` (not on ``consent_event``) write it in the same transaction as the
ledger: the state only moves when a decision really changes what counts, so a backdated event that
overturns nothing, or a second withdrawal of a consent already withdrawn, notifies nobody. The
ledger's append path (one asyncpg statement on PostgreSQL) stays as it is.

Revision ID: 0005_change_feed
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_change_feed"
down_revision = "0004"
branch_labels = None
depends_on = None

_NOTIFIED = "('withdrawn', 'refused', 'expired')"
_COLUMNS = "event_id, subject_id, purpose, action, occurred_at"
_VALUES = "NEW.event_id, NEW.subject_id, NEW.purpose, NEW.status, NEW.since"

_POSTGRES_FUNCTION = f"""
CREATE FUNCTION consent_state_change_feed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO consent_change ({_COLUMNS}) VALUES ({_VALUES});
    RETURN NULL;
END;
$$
"""


def _create_triggers() -> None:
    became = f"NEW.status IN {_NOTIFIED}"
    changed = f"{became} AND NEW.status IS DISTINCT FROM OLD.status"
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_POSTGRES_FUNCTION)
        op.execute(
            "CREATE TRIGGER consent_state_change_feed_insert AFTER INSERT ON consent_state "
            f"FOR EACH ROW WHEN ({became}) EXECUTE FUNCTION consent_state_change_feed()"
        )
        op.execute(
            "CREATE TRIGGER consent_state_change_feed_update AFTER UPDATE ON consent_state "
            f"FOR EACH ROW WHEN ({changed}) EXECUTE FUNCTION consent_state_change_feed()"
        )
        return
    changed = f"{became} AND NEW.status IS NOT OLD.status"
    for operation, condition in (("INSERT", became), ("UPDATE", changed)):
        op.execute(
            f"CREATE TRIGGER consent_state_change_feed_{operation.lower()} AFTER {operation} ON consent_state "
            f"FOR EACH ROW WHEN {condition} "
            f"BEGIN INSERT INTO consent_change ({_COLUMNS}) VALUES ({_VALUES}); END"
        )


def upgrade() -> None:
    op.create_table(
        "consent_change",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("seq", sa.BigInteger(), nullable=True),
        sa.Column("event_id", sa.String(36), nullable=True),
        sa.Column("subject_id", sa.String(64), nullable=False),
        sa.Column("purpose", sa.String(100), nullable=True),
        sa.Column("action", sa.String(20), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_consent_change_seq", "consent_change", ["seq"], unique=True)
    _create_triggers()


def downgrade() -> None:
    for operation in ("insert", "update"):
        if op.get_bind().dialect.name == "postgresql":
            op.execute(f"DROP TRIGGER IF EXISTS consent_state_change_feed_{operation} ON consent_state")
        else:
            op.execute(f"DROP TRIGGER IF EXISTS consent_state_change_feed_{operation}")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS consent_state_change_feed()")
    op.drop_index("ix_consent_change_seq", "consent_change")
    op.drop_table("consent_change")
