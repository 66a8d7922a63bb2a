"""Versioned definitions (segments, rules, slots), a change counter and exposure counts.

The first segments (flat ``conditions``, all must hold) move into ``definition`` as version 1 of
kind ``segment`` with ``when: {all: [...]}`` over ``profile.<field>``; the old table goes.

Revision ID: 0002_rules_definitions
Revises: 0001
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0002_rules_definitions"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    definition = op.create_table(
        "definition",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("purpose", sa.String(100), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("problem", sa.String(2000), nullable=True),
        sa.Column("disabled_by", sa.String(16), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("kind", "key", "version", name="uq_definition_version"),
    )
    op.create_index("ix_definition_purpose", "definition", ["purpose", "kind"])
    generation = op.create_table(
        "rules_generation",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("value", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "exposure",
        sa.Column("experiment", sa.String(64), primary_key=True),
        sa.Column("arm", sa.String(64), primary_key=True),
        sa.Column("day", sa.Date(), primary_key=True),
        sa.Column("count", sa.BigInteger(), nullable=False),
    )
    connection = op.get_bind()
    old = sa.table(
        "segment",
        sa.column("key", sa.String()),
        sa.column("title", sa.String()),
        sa.column("purpose", sa.String()),
        sa.column("conditions", sa.JSON()),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    rows = []
    for segment in connection.execute(sa.select(old)).mappings():
        leaves = [{**leaf, "field": f"profile.{leaf['field']}"} for leaf in segment["conditions"]]
        rows.append(
            {
                "kind": "segment",
                "key": segment["key"],
                "version": 1,
                "purpose": segment["purpose"],
                "title": segment["title"],
                "body": {
                    "kind": "segment",
                    "key": segment["key"],
                    "title": segment["title"],
                    "purpose": segment["purpose"],
                    "when": {"all": leaves},
                },
                "status": "active",
                "created_at": segment["created_at"],
                "changed_at": segment["created_at"] or datetime.now(UTC),
            }
        )
    if rows:
        op.bulk_insert(definition, rows)
    op.bulk_insert(generation, [{"id": 1, "value": 1}])
    op.drop_table("segment")


def downgrade() -> None:
    op.create_table(
        "segment",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("purpose", sa.String(100), nullable=False),
        sa.Column("conditions", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.drop_table("exposure")
    op.drop_table("rules_generation")
    op.drop_index("ix_definition_purpose", table_name="definition")
    op.drop_table("definition")
