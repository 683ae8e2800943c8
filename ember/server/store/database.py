"""Open the store's database: SQLite or PostgreSQL by URL, reachable, at the newest schema.

`postgresql://` URLs use psycopg 3 (the `postgres` extra). Two servers may share one PostgreSQL
database; the schema is brought up to date by Alembic (ember/server/store/migrations) at every
start, under a lock so that two servers starting together migrate once.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url

from ember.server.store.migrate import upgrade

POSTGRES_DRIVER = "postgresql+psycopg"
CONNECT_TIMEOUT = 10  # seconds to reach PostgreSQL at start before saying it is unreachable


# What a query raises while the database is unreachable (a restart, the network): the API
# answers 503 (ember/server/app.py), deployed apps go on serving from memory.
DatabaseDown = sa.exc.OperationalError


class StoreUnavailable(RuntimeError):
    """The database cannot be opened: unreachable, refused, or its driver is missing."""


def reason(error: sa.exc.DBAPIError) -> str:
    """The driver's own first line ("connection refused"), without SQLAlchemy's dump of the
    statement."""
    return str(error.orig or error).strip().splitlines()[0]


def shown_url(url: str | URL) -> str:
    """The URL as it may be printed: without its password."""
    return make_url(url).render_as_string(hide_password=True)


def open_engine(url: str) -> Engine:
    """An engine on `url`, connected once (a clear StoreUnavailable if it cannot be) and migrated
    to the newest schema."""
    parsed = _with_driver(make_url(url))
    try:
        engine = sa.create_engine(parsed, **_engine_options(parsed))
    except ModuleNotFoundError as missing:
        raise StoreUnavailable(
            f"{shown_url(parsed)} needs the {missing.name} package: pip install 'ember[postgres]'"
        ) from None
    if parsed.get_backend_name() == "sqlite":
        sa.event.listen(engine, "connect", _enable_sqlite_wal)
    try:
        upgrade(engine)
    except DatabaseDown as error:
        engine.dispose()
        raise StoreUnavailable(
            f"cannot open the database {shown_url(parsed)}: {reason(error)}. Check that it is "
            "running and the URL (--database-url or EMBER_DATABASE_URL) is right."
        ) from None
    return engine


def _with_driver(url: URL) -> URL:
    """`postgresql://` alone would mean psycopg2; Ember ships with psycopg 3."""
    return url.set(drivername=POSTGRES_DRIVER) if url.drivername == "postgresql" else url


def _engine_options(url: URL) -> dict[str, Any]:
    if url.get_backend_name() != "postgresql":
        return {}
    # pool_pre_ping: a connection the database dropped (a restart) is replaced, not handed out.
    return {"pool_pre_ping": True, "connect_args": {"connect_timeout": CONNECT_TIMEOUT}}


def _enable_sqlite_wal(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()
