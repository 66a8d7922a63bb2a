"""An index that serves an audience: the given consents of one purpose in subject order.

The gateway streams an audience by keyset pagination (``purpose = ? AND status = 'given' AND
subject_id > ? ORDER BY subject_id``); the primary key (subject_id, purpose) cannot serve that.

Revision ID: 0005_audience_index
"""

from alembic import op

revision = "0006_audience_index"
down_revision = "0005_change_feed"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_consent_state_audience", "consent_state", ["purpose", "status", "subject_id"])


def downgrade() -> None:
    op.drop_index("ix_consent_state_audience", "consent_state")
