"""Alembic's entry point: run the pending revisions on the connection migrate.upgrade opened."""

from __future__ import annotations

from alembic import context

from ember.server.store.tables import metadata

# target_metadata lets `alembic check` and the tests compare the revisions with tables.py;
# render_as_batch lets later revisions alter SQLite tables (it cannot ALTER most columns).
context.configure(
    connection=context.config.attributes["connection"],
    target_metadata=metadata,
    render_as_batch=True,
)
with context.begin_transaction():
    context.run_migrations()
