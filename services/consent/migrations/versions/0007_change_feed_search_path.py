"""The change-feed trigger finds ``consent_change`` whatever the writer's ``search_path``.

The trigger function named the table unqualified, so it resolved through the search path of the
session that changed ``consent_state``. The services set it to their own schema, but a bulk load or a
DBA's session that addressed the table by its schema-qualified name failed with
``relation "consent_change" does not exist`` and its whole write was rolled back. The function now
carries the schema it was created in (``SET search_path FROM CURRENT``, as PostgreSQL advises for
trigger and security-sensitive functions). SQLite triggers have no search path.

Revision ID: 0007_change_feed_search_path
"""

from alembic import op

revision = "0007_change_feed_search_path"
down_revision = "0006_audience_index"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER FUNCTION consent_state_change_feed() SET search_path FROM CURRENT")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER FUNCTION consent_state_change_feed() RESET search_path")
