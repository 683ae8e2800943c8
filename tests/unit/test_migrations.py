"""Migrations at start: they build exactly the tables of tables.py on both dialects, and a
database made before migrations existed is brought up to date with its rows kept."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from ember import wire
from ember.server.store import tables as t
from ember.server.store.migrate import current, head
from ember.server.store.sql import SqlStore, hash_token

# The tables of the server before metering and cold starts (made by metadata.create_all).
OLDER_TABLES = [t.tokens, t.apps, t.app_versions, t.calls, t.secrets, t.volumes, t.logs]


def test_the_migrations_build_the_tables_of_tables_py(database_url: str) -> None:
    store = SqlStore(database_url)
    with store.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), t.metadata) == []
        assert current(conn) == head()
    store.close()
    SqlStore(database_url).close()  # a second start finds nothing to do


def test_servers_starting_together_migrate_once(postgres_url: str) -> None:
    with ThreadPoolExecutor(4) as pool:
        stores = list(pool.map(lambda _: SqlStore(postgres_url), range(4)))
    stores[0].create_token("t", kind="admin")
    assert len(stores[3].list_tokens(["admin"])) == 1
    for store in stores:
        store.close()


def test_a_database_from_before_migrations_keeps_its_rows(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ember.db'}"
    engine = sa.create_engine(url)
    t.metadata.create_all(engine, tables=OLDER_TABLES)
    request = wire.DeployRequest(app_name="kept", declared_name="kept", module="m", functions=[])
    token = {"id": "t1", "name": "me", "kind": "admin", "app": None, "created_at": 1.0,
             "secret_hash": hash_token("ember-old"), "revoked": False}  # fmt: skip
    app = {"name": "kept", "state": "deployed", "version": 3, "ephemeral": False,
           "created_at": 1.0, "updated_at": 2.0}  # fmt: skip
    version = {"app": "kept", "version": 3, "created_at": 2.0, "request": request.model_dump_json()}
    line = {"ts": 1.0, "app": "kept", "function": "f", "replica": "r", "text": "hello"}
    with engine.begin() as conn:
        for table, row in [(t.tokens, token), (t.apps, app), (t.app_versions, version),
                           (t.logs, line)]:  # fmt: skip
            conn.execute(table.insert().values(**row))
    engine.dispose()

    store = SqlStore(url)
    token = store.verify_token("ember-old")
    assert token is not None and token.name == "me"
    assert store.app_version("kept", 3).app_name == "kept"
    assert [line.text for line in store.read_logs("kept")] == ["hello"]
    assert store.deploy(request) == 4  # the version count goes on
    store.set_budget("kept", 5.0)  # the tables added since exist
    assert store.budgets() == {"kept": 5.0}
    with store.engine.connect() as conn:
        assert current(conn) == head()
