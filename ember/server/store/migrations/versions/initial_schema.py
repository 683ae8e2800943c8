"""The schema as it was when migrations began: every table, each created only where missing.

Databases made before Alembic (by `metadata.create_all`) have some or all of these tables and no
alembic_version; this revision adds the tables they lack and leaves their rows alone. The table
definitions are frozen here on purpose: later changes to tables.py come as new revisions.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _tables() -> list[tuple[str, list[sa.Column[Any]]]]:
    return [
        ("tokens", [
            sa.Column("id", sa.String, primary_key=True),
            sa.Column("name", sa.String, nullable=False),
            sa.Column("kind", sa.String, nullable=False),
            sa.Column("app", sa.String, nullable=True),
            sa.Column("secret_hash", sa.String, nullable=False, unique=True),
            sa.Column("created_at", sa.Float, nullable=False),
            sa.Column("revoked", sa.Boolean, nullable=False),
        ]),
        ("apps", [
            sa.Column("name", sa.String, primary_key=True),
            sa.Column("state", sa.String, nullable=False),
            sa.Column("version", sa.Integer, nullable=False),
            sa.Column("ephemeral", sa.Boolean, nullable=False),
            sa.Column("created_at", sa.Float, nullable=False),
            sa.Column("updated_at", sa.Float, nullable=False),
        ]),
        ("app_versions", [
            sa.Column("app", sa.String, primary_key=True),
            sa.Column("version", sa.Integer, primary_key=True),
            sa.Column("request", sa.Text, nullable=False),
            sa.Column("created_at", sa.Float, nullable=False),
        ]),
        ("calls", [
            sa.Column("id", sa.String, primary_key=True),
            sa.Column("app", sa.String, nullable=False, index=True),
            sa.Column("function", sa.String, nullable=False),
            sa.Column("method", sa.String, nullable=True),
            sa.Column("params", sa.Text, nullable=False),
            sa.Column("kind", sa.String, nullable=False),
            sa.Column("status", sa.String, nullable=False, index=True),
            sa.Column("inputs", sa.Integer, nullable=False),
            sa.Column("payload", sa.LargeBinary, nullable=True),
            sa.Column("result", sa.LargeBinary, nullable=True),
            sa.Column("error", sa.Text, nullable=True),
            sa.Column("created_at", sa.Float, nullable=False),
            sa.Column("finished_at", sa.Float, nullable=True),
        ]),
        ("secrets", [
            sa.Column("name", sa.String, primary_key=True),
            sa.Column("sealed", sa.LargeBinary, nullable=False),
            sa.Column("key_names", sa.Text, nullable=False),
            sa.Column("created_at", sa.Float, nullable=False),
            sa.Column("updated_at", sa.Float, nullable=False),
        ]),
        ("volumes", [
            sa.Column("name", sa.String, primary_key=True),
            sa.Column("created_at", sa.Float, nullable=False),
        ]),
        ("cold_starts", [
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("app", sa.String, nullable=False, index=True),
            sa.Column("function", sa.String, nullable=False),
            sa.Column("replica", sa.String, nullable=False),
            sa.Column("tier", sa.String, nullable=False),
            sa.Column("seconds", sa.Float, nullable=False),
            sa.Column("phases", sa.JSON, nullable=False),
            sa.Column("at", sa.Float, nullable=False),
        ]),
        ("logs", [
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("ts", sa.Float, nullable=False),
            sa.Column("app", sa.String, nullable=False, index=True),
            sa.Column("function", sa.String, nullable=False),
            sa.Column("replica", sa.String, nullable=False),
            sa.Column("text", sa.Text, nullable=False),
        ]),
        ("usage_segments", [
            sa.Column("id", sa.String, primary_key=True),
            sa.Column("replica", sa.String, nullable=False),
            sa.Column("app", sa.String, nullable=False, index=True),
            sa.Column("version", sa.Integer, nullable=False),
            sa.Column("function", sa.String, nullable=False),
            sa.Column("state", sa.String, nullable=False),
            sa.Column("gpu_type", sa.String, nullable=True),
            sa.Column("gpus", sa.Integer, nullable=False),
            sa.Column("cpu", sa.Float, nullable=False),
            sa.Column("memory_mib", sa.Integer, nullable=False),
            sa.Column("rate", sa.Float, nullable=False),
            sa.Column("started_at", sa.Float, nullable=False),
            sa.Column("ended_at", sa.Float, nullable=False, index=True),
            sa.Column("open", sa.Boolean, nullable=False),
        ]),
        ("input_usage", [
            sa.Column("app", sa.String, primary_key=True),
            sa.Column("function", sa.String, primary_key=True),
            sa.Column("day", sa.String, primary_key=True),
            sa.Column("inputs", sa.Integer, nullable=False),
            sa.Column("seconds", sa.Float, nullable=False),
            sa.Column("gpu_seconds", sa.Float, nullable=False),
            sa.Column("gpu_cost", sa.Float, nullable=False),
        ]),
        ("budgets", [
            sa.Column("scope", sa.String, primary_key=True),
            sa.Column("monthly_usd", sa.Float, nullable=False),
            sa.Column("updated_at", sa.Float, nullable=False),
        ]),
        ("budget_alerts", [
            sa.Column("scope", sa.String, primary_key=True),
            sa.Column("month", sa.String, primary_key=True),
            sa.Column("level", sa.Integer, primary_key=True),
            sa.Column("sent_at", sa.Float, nullable=False),
        ]),
    ]  # fmt: skip


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    for name, columns in _tables():
        if name not in existing:
            op.create_table(name, *columns)


def downgrade() -> None:
    for name, _ in reversed(_tables()):
        op.drop_table(name)
