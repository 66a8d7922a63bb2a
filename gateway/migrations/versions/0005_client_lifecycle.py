"""Channel clients: when the secret was last rotated and when the client was disabled.

Revision ID: 0005_client_lifecycle
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_client_lifecycle"
down_revision = "0004_audit_queries"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("channel_client") as batch:
        batch.add_column(sa.Column("secret_rotated_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("channel_client") as batch:
        batch.drop_column("disabled_at")
        batch.drop_column("secret_rotated_at")
