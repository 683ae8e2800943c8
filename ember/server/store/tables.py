"""The store's tables (SQLAlchemy Core)."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

tokens = Table(
    "tokens",
    metadata,
    Column("id", String, primary_key=True),
    Column("name", String, nullable=False),
    Column("kind", String, nullable=False),  # admin | replica | endpoint
    Column("app", String, nullable=True),  # endpoint keys are scoped to one app
    Column("secret_hash", String, nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
    Column("revoked", Boolean, nullable=False, default=False),
)

apps = Table(
    "apps",
    metadata,
    Column("name", String, primary_key=True),
    Column("state", String, nullable=False),  # deployed | stopped
    Column("version", Integer, nullable=False),
    Column("ephemeral", Boolean, nullable=False, default=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

app_versions = Table(
    "app_versions",
    metadata,
    Column("app", String, primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("request", Text, nullable=False),  # wire.DeployRequest as JSON: module, files, specs
    Column("created_at", Float, nullable=False),
)

calls = Table(
    "calls",
    metadata,
    Column("id", String, primary_key=True),
    Column("app", String, nullable=False, index=True),
    Column("function", String, nullable=False),
    Column("method", String, nullable=True),
    Column("params", Text, nullable=False, default=""),
    Column("kind", String, nullable=False),  # remote | map | spawn
    Column("status", String, nullable=False, index=True),
    Column("inputs", Integer, nullable=False, default=1),
    Column("payload", LargeBinary, nullable=True),  # kept for spawned calls only
    Column("result", LargeBinary, nullable=True),
    Column("error", Text, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("finished_at", Float, nullable=True, index=True),  # retention finds old ones
)

secrets = Table(
    "secrets",
    metadata,
    Column("name", String, primary_key=True),
    Column("sealed", LargeBinary, nullable=False),  # Fernet ciphertext of a JSON object
    Column("key_names", Text, nullable=False),  # comma-separated, for `ember secret list`
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

volumes = Table(
    "volumes",
    metadata,
    Column("name", String, primary_key=True),  # files: $EMBER_HOME/volumes/<name>
    Column("created_at", Float, nullable=False),
)

cold_starts = Table(
    "cold_starts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("app", String, nullable=False, index=True),
    Column("function", String, nullable=False),
    Column("replica", String, nullable=False),
    Column("tier", String, nullable=False),  # fresh | fork | restore
    Column("seconds", Float, nullable=False),
    Column("phases", JSON, nullable=False),  # phase -> seconds
    Column("at", Float, nullable=False),
)

logs = Table(
    "logs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ts", Float, nullable=False),
    Column("app", String, nullable=False, index=True),
    Column("function", String, nullable=False),
    Column("replica", String, nullable=False),
    Column("text", Text, nullable=False),
)

# Metering (ember/server/metering/meter.py): one row per stretch of time a replica spent in one
# state, with what it held and its price per second then. An open row's `ended_at` is the last
# checkpoint: after a crash it is billed up to there, once.
usage_segments = Table(
    "usage_segments",
    metadata,
    Column("id", String, primary_key=True),
    Column("replica", String, nullable=False),
    Column("app", String, nullable=False, index=True),
    Column("version", Integer, nullable=False),
    Column("function", String, nullable=False),
    Column("state", String, nullable=False),
    Column("gpu_type", String, nullable=True),
    Column("gpus", Integer, nullable=False),
    Column("cpu", Float, nullable=False),  # cores
    Column("memory_mib", Integer, nullable=False),
    Column("rate", Float, nullable=False),  # USD per second
    Column("started_at", Float, nullable=False),
    Column("ended_at", Float, nullable=False, index=True),
    Column("open", Boolean, nullable=False),
)

# Inputs run, per function and UTC day: their seconds on replicas, and those seconds times the
# GPUs the replica held (the GPU time of each input, so the cost of a request is known).
input_usage = Table(
    "input_usage",
    metadata,
    Column("app", String, primary_key=True),
    Column("function", String, primary_key=True),
    Column("day", String, primary_key=True),  # YYYY-MM-DD, UTC
    Column("inputs", Integer, nullable=False),
    Column("seconds", Float, nullable=False),
    Column("gpu_seconds", Float, nullable=False),
    Column("gpu_cost", Float, nullable=False),
)

budgets = Table(
    "budgets",
    metadata,
    Column("scope", String, primary_key=True),  # an app's name, or "*": the whole server
    Column("monthly_usd", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

# Alerts sent (80 %, 100 % of a budget in a month): each goes out once, restarts included.
budget_alerts = Table(
    "budget_alerts",
    metadata,
    Column("scope", String, primary_key=True),
    Column("month", String, primary_key=True),  # YYYY-MM, UTC
    Column("level", Integer, primary_key=True),  # percent
    Column("sent_at", Float, nullable=False),
)
