"""Quiz counters in shards: each (quiz, version, metric, question, bucket) is kept in up to 32 rows.

Every answer adds to the same few counters (the answered option, the drop-off of the question), so
with one row per counter every concurrent answer to a question queued for that row's lock until the
transaction before it had committed. A write now adds to one shard, picked by its quiz session;
analytics sum the shards. The existing counts stay in shard 0.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_KEY = ("quiz_id", "version", "metric", "question_id", "bucket")


def _table(name: str, *, sharded: bool) -> None:
    op.create_table(
        name,
        sa.Column("quiz_id", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer(), primary_key=True),
        sa.Column("metric", sa.String(16), primary_key=True),
        sa.Column("question_id", sa.String(64), primary_key=True),
        sa.Column("bucket", sa.String(64), primary_key=True),
        *([sa.Column("shard", sa.Integer(), primary_key=True, server_default="0")] if sharded else []),
        sa.Column("count", sa.BigInteger(), nullable=False),
    )


def upgrade() -> None:
    # A new table rather than ALTER ... PRIMARY KEY: the same steps on SQLite and PostgreSQL.
    _table("quiz_counter_sharded", sharded=True)
    columns = ", ".join(_KEY)
    op.execute(
        f"INSERT INTO quiz_counter_sharded ({columns}, shard, count) SELECT {columns}, 0, count FROM quiz_counter"
    )
    op.drop_table("quiz_counter")
    op.rename_table("quiz_counter_sharded", "quiz_counter")


def downgrade() -> None:
    _table("quiz_counter_single", sharded=False)
    columns = ", ".join(_KEY)
    op.execute(
        f"INSERT INTO quiz_counter_single ({columns}, count) "
        f"SELECT {columns}, sum(count) FROM quiz_counter GROUP BY {columns}"
    )
    op.drop_table("quiz_counter")
    op.rename_table("quiz_counter_single", "quiz_counter")
