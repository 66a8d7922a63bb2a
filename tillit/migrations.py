"""Alembic, applied on start.

Each component keeps its migrations in ``<package>/migrations`` with a tiny ``env.py`` that calls
:func:`run_env`. :func:`upgrade_to_head` runs them on the component's own async engine, inside its
PostgreSQL schema when it has one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command, context
from alembic.config import Config
from sqlalchemy.engine import Connection

from tillit.db import Database

__all__ = ["run_env", "upgrade_to_head"]


def _config(script_location: Path, connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(script_location))
    config.attributes["connection"] = connection
    return config


async def upgrade_to_head(database: Database, script_location: Path) -> None:
    await database.ensure_schema()

    def _upgrade(connection: Connection) -> None:
        command.upgrade(_config(script_location, connection), "head")

    async with database.engine.begin() as conn:
        await conn.run_sync(_upgrade)


def run_env(target_metadata: Any = None) -> None:
    """Body of every component's ``env.py``: migrate on the connection handed over above."""
    connection: Connection = context.config.attributes["connection"]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        transaction_per_migration=False,
    )
    with context.begin_transaction():
        context.run_migrations()
