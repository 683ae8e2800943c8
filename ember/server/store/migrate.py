"""Schema migrations at server start: Alembic's `upgrade head`, once, under a lock.

A database made before migrations existed (tables, no alembic_version) is brought up by the same
upgrade: the first revision creates only the tables it lacks, and keeps every row.
"""

from __future__ import annotations

import functools
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine

MIGRATIONS = Path(__file__).parent / "migrations"
# Two servers starting on one PostgreSQL database: the second waits here, then finds it done.
ADVISORY_LOCK = 0x656D626572  # "ember"


@functools.cache
def head() -> str | None:
    """The newest revision in ember/server/store/migrations/versions."""
    return ScriptDirectory(str(MIGRATIONS)).get_current_head()


def current(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine) -> None:
    """Bring the database to the newest revision (nothing to do: one query)."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": ADVISORY_LOCK})
        if current(conn) == head():
            return
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
