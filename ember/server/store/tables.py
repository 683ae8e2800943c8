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
    Column("finished_at", Float, nullable=True),
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
