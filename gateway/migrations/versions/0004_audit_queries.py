"""Release audit: queryable by channel and subject in time order, refusals recorded too.

``outcome`` tells a release from a refused attempt (a channel asking for a purpose it is not
registered for); rows written before this revision were all releases. The two composite indexes
serve the keyset-paginated audit query (``WHERE channel|subject_id = ? ORDER BY released_at,
release_id``) without a sort.

Revision ID: 0004_audit_queries
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_audit_queries"
down_revision = "0003_webhooks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("release_record") as batch:
        batch.add_column(sa.Column("outcome", sa.String(16), nullable=False, server_default="released"))
    op.create_index("ix_release_record_channel_time", "release_record", ["channel", "released_at", "release_id"])
    op.create_index("ix_release_record_subject_time", "release_record", ["subject_id", "released_at", "release_id"])


def downgrade() -> None:
    op.drop_index("ix_release_record_subject_time", "release_record")
    op.drop_index("ix_release_record_channel_time", "release_record")
    with op.batch_alter_table("release_record") as batch:
        batch.drop_column("outcome")
