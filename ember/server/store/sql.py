"""SqlStore: apps, versions, tokens, calls, secrets, volumes, logs, usage and budgets, on SQLite or
PostgreSQL.

Writes that two servers on one database can race (a deploy's version number, a secret, a volume,
usage totals, budgets, alerts) are single upserts (INSERT ... ON CONFLICT, in both dialects), not
a read and then a write.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine, RowMapping

from ember import wire
from ember.server.store import tables as t
from ember.server.store.base import (
    UNFINISHED,
    AppRecord,
    CallRecord,
    CallState,
    LogFilter,
    Row,
    TokenRecord,
    hash_token,
)
from ember.server.store.database import open_engine


class BlobBox(Protocol):
    """Encrypts the blobs a call keeps (its input, its result) before they reach the store."""

    def seal_bytes(self, data: bytes) -> bytes: ...

    def open_bytes(self, data: bytes) -> bytes: ...


CALL_COLUMNS = [t.calls.c[field.name] for field in dataclasses.fields(CallRecord)]
INPUT_TOTALS = ("inputs", "seconds", "gpu_seconds", "gpu_cost")


def _log_clauses(filters: LogFilter) -> list[Any]:
    clauses: list[Any] = []
    if filters.function is not None:
        clauses.append(t.logs.c.function == filters.function)
    if filters.since is not None:
        clauses.append(t.logs.c.ts >= filters.since)
    if filters.replica is not None:
        clauses.append(t.logs.c.replica.startswith(filters.replica, autoescape=True))
    return clauses


def _through(call: CallRecord, box: Callable[[bytes], bytes]) -> CallRecord:
    """`call` with its blobs (input, output) sealed or opened by `box`."""
    payload, result = call.payload, call.result
    return dataclasses.replace(
        call, payload=box(payload) if payload else payload, result=box(result) if result else result
    )


def _insert(conn: Connection, table: sa.Table) -> Any:
    """An INSERT that takes ON CONFLICT clauses, in the connection's dialect."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


def _inserted(conn: Connection, insert: Any, column: sa.Column[Any]) -> bool:
    """Whether an INSERT ... ON CONFLICT DO NOTHING inserted its row (RETURNING tells; psycopg's
    rowcount does not)."""
    return conn.execute(insert.returning(column)).first() is not None


def _upsert(conn: Connection, table: sa.Table, keys: list[str], row: dict[str, Any]) -> None:
    """Insert `row`, or update the row with the same `keys` to its other values."""
    insert = _insert(conn, table).values(**row)
    updated = {name: value for name, value in row.items() if name not in keys}
    conn.execute(insert.on_conflict_do_update(index_elements=keys, set_=updated))


class SqlStore:
    """The Store on SQLAlchemy: its methods block, each one short transaction."""

    def __init__(self, url: str, blobs: BlobBox | None = None) -> None:
        self._blobs = blobs  # without one (tokens-only users of the store), blobs stay as given
        self.engine: Engine = open_engine(url)

    def close(self) -> None:
        self.engine.dispose()

    # -- tokens ---------------------------------------------------------------------------

    def create_token(self, name: str, kind: str, app: str | None = None) -> wire.TokenCreated:
        token_id = uuid.uuid4().hex[:12]
        token = f"ember-{secrets.token_urlsafe(32)}"
        with self.engine.begin() as conn:
            conn.execute(
                t.tokens.insert().values(
                    id=token_id,
                    name=name,
                    kind=kind,
                    app=app,
                    secret_hash=hash_token(token),
                    created_at=time.time(),
                    revoked=False,
                )
            )
        return wire.TokenCreated(id=token_id, name=name, token=token)

    def verify_token(self, token: str) -> TokenRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(t.tokens).where(
                    t.tokens.c.secret_hash == hash_token(token), t.tokens.c.revoked.is_(False)
                )
            ).first()
        return TokenRecord(row.id, row.name, row.kind, row.app) if row else None

    def list_tokens(self, kinds: Iterable[str]) -> list[wire.TokenInfo]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t.tokens)
                .where(t.tokens.c.kind.in_(list(kinds)))
                .order_by(t.tokens.c.created_at)
            ).all()
        return [
            wire.TokenInfo(
                id=r.id,
                name=r.name,
                kind=r.kind,
                created_at=r.created_at,
                revoked=r.revoked,
                app=r.app,
            )
            for r in rows
        ]

    def revoke_token(self, token_id: str) -> bool:
        with self.engine.begin() as conn:
            result = conn.execute(
                t.tokens.update().where(t.tokens.c.id == token_id).values(revoked=True)
            )
        return result.rowcount > 0

    def revoke_tokens(self, kind: str, name: str) -> None:
        """Revoke every live token of `kind` called `name`."""
        with self.engine.begin() as conn:
            conn.execute(
                t.tokens.update()
                .where(
                    t.tokens.c.kind == kind, t.tokens.c.name == name, t.tokens.c.revoked.is_(False)
                )
                .values(revoked=True)
            )

    # -- apps -----------------------------------------------------------------------------

    def deploy(self, request: wire.DeployRequest) -> int:
        """Store a new version of the app and make it current; returns the version number."""
        now = time.time()
        values = {"state": "deployed", "ephemeral": request.ephemeral, "updated_at": now}
        with self.engine.begin() as conn:
            # One statement takes the next number: two deploys at once get two versions.
            insert = _insert(conn, t.apps).values(
                name=request.app_name, version=1, created_at=now, **values
            )
            bump = insert.on_conflict_do_update(
                index_elements=["name"], set_={**values, "version": t.apps.c.version + 1}
            )
            version = conn.execute(bump.returning(t.apps.c.version)).scalar_one()
            conn.execute(
                t.app_versions.insert().values(
                    app=request.app_name,
                    version=version,
                    request=request.model_dump_json(),
                    created_at=now,
                )
            )
        return int(version)

    def get_app(self, name: str) -> AppRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t.apps).where(t.apps.c.name == name)).mappings().first()
        return AppRecord(**row) if row else None

    def list_apps(self) -> list[AppRecord]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t.apps).order_by(t.apps.c.name)).mappings().all()
        return [AppRecord(**r) for r in rows]

    def app_version(self, name: str, version: int) -> wire.DeployRequest:
        with self.engine.connect() as conn:
            text = conn.execute(
                sa.select(t.app_versions.c.request).where(
                    t.app_versions.c.app == name, t.app_versions.c.version == version
                )
            ).scalar_one()
        return wire.DeployRequest.model_validate_json(text)

    def set_app_state(self, name: str, state: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                t.apps.update()
                .where(t.apps.c.name == name)
                .values(state=state, updated_at=time.time())
            )

    def delete_app(self, name: str) -> None:
        """Forget an app entirely (ephemeral apps, once their run ends)."""
        with self.engine.begin() as conn:
            for table in (t.apps, t.app_versions):
                column = table.c.name if table is t.apps else table.c.app
                conn.execute(table.delete().where(column == name))

    # -- calls ----------------------------------------------------------------------------

    def insert_calls(self, calls: list[CallRecord]) -> None:
        if calls:
            rows = [dataclasses.asdict(self._sealed(call)) for call in calls]
            with self.engine.begin() as conn:
                conn.execute(t.calls.insert(), rows)

    def update_call(
        self,
        call_id: str,
        status: CallState,
        result: bytes | None = None,
        finished_at: float | None = None,
    ) -> None:
        values: Row = {"status": status}
        if result is not None:
            values["result"] = self._blobs.seal_bytes(result) if self._blobs else result
        if finished_at is not None:
            values["finished_at"] = finished_at
        unfinished = t.calls.c.status.in_(UNFINISHED)
        with self.engine.begin() as conn:
            conn.execute(
                t.calls.update().where(t.calls.c.id == call_id, unfinished).values(**values)
            )

    def get_call(self, call_id: str) -> CallRecord | None:
        with self.engine.connect() as conn:
            query = sa.select(*CALL_COLUMNS).where(t.calls.c.id == call_id)
            row = conn.execute(query).mappings().first()
        return self._opened(row) if row else None

    def unfinished_spawns(self) -> list[CallRecord]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(*CALL_COLUMNS).where(
                    t.calls.c.kind == "spawn", t.calls.c.status.in_(UNFINISHED)
                )
            ).mappings()
            return [self._opened(row) for row in rows]

    def delete_calls_finished_before(self, before: float, limit: int) -> int:
        old = sa.select(t.calls.c.id).where(t.calls.c.finished_at < before).limit(limit)
        with self.engine.begin() as conn:
            deleted = conn.execute(t.calls.delete().where(t.calls.c.id.in_(old.scalar_subquery())))
        return int(deleted.rowcount)

    def _sealed(self, call: CallRecord) -> CallRecord:
        return _through(call, self._blobs.seal_bytes) if self._blobs else call

    def _opened(self, row: RowMapping) -> CallRecord:
        call = CallRecord(**row)
        return _through(call, self._blobs.open_bytes) if self._blobs else call

    # -- secrets --------------------------------------------------------------------------

    def put_secret(self, name: str, sealed: bytes, keys: list[str]) -> None:
        now = time.time()
        values = {"sealed": sealed, "key_names": ",".join(sorted(keys))}
        created = t.secrets.c.created_at
        # Never before the creation, which a racing server may have stamped a moment later.
        updated_at = sa.case((created > now, created), else_=now)
        with self.engine.begin() as conn:
            insert = _insert(conn, t.secrets).values(
                name=name, created_at=now, updated_at=now, **values
            )
            conn.execute(
                insert.on_conflict_do_update(
                    index_elements=["name"], set_={**values, "updated_at": updated_at}
                )
            )

    def get_secret(self, name: str) -> bytes | None:
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(t.secrets.c.sealed).where(t.secrets.c.name == name)
            ).scalar()

    def list_secrets(self) -> list[wire.SecretInfo]:
        with self.engine.connect() as conn:
            rows = (
                conn.execute(
                    sa.select(
                        t.secrets.c.name,
                        t.secrets.c.key_names,
                        t.secrets.c.created_at,
                        t.secrets.c.updated_at,
                    ).order_by(t.secrets.c.name)
                )
                .mappings()
                .all()
            )
        return [
            wire.SecretInfo(
                name=r["name"],
                keys=r["key_names"].split(",") if r["key_names"] else [],
                created_at=r["created_at"],
                updated_at=r["updated_at"],
            )
            for r in rows
        ]

    def delete_secret(self, name: str) -> bool:
        with self.engine.begin() as conn:
            return conn.execute(t.secrets.delete().where(t.secrets.c.name == name)).rowcount > 0

    # -- volumes (their files live on disk: ember/runtime/volumes.py) ---------------------

    def create_volume(self, name: str) -> float | None:
        """Record a new volume; returns its creation time, or None if it exists already."""
        now = time.time()
        with self.engine.begin() as conn:
            insert = _insert(conn, t.volumes).values(name=name, created_at=now)
            created = _inserted(conn, insert.on_conflict_do_nothing(), t.volumes.c.name)
        return now if created else None

    def get_volume(self, name: str) -> float | None:
        """The volume's creation time, or None if there is no such volume."""
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(t.volumes.c.created_at).where(t.volumes.c.name == name)
            ).scalar()

    def list_volumes(self) -> list[tuple[str, float]]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t.volumes).order_by(t.volumes.c.name)).all()
        return [(r.name, r.created_at) for r in rows]

    def delete_volume(self, name: str) -> bool:
        with self.engine.begin() as conn:
            return conn.execute(t.volumes.delete().where(t.volumes.c.name == name)).rowcount > 0

    # -- logs -----------------------------------------------------------------------------

    def insert_cold_starts(self, rows: list[Row]) -> None:
        if rows:
            with self.engine.begin() as conn:
                conn.execute(t.cold_starts.insert(), rows)

    def append_logs(self, rows: list[Row]) -> None:
        if rows:
            with self.engine.begin() as conn:
                conn.execute(t.logs.insert(), rows)

    def read_logs(
        self, app: str, after: int = 0, limit: int = 1000, filters: LogFilter | None = None
    ) -> list[wire.LogLine]:
        query = sa.select(t.logs).where(t.logs.c.app == app, t.logs.c.id > after)
        if filters is not None:
            query = query.where(*_log_clauses(filters))
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(t.logs.c.id).limit(limit)).mappings().all()
        return [wire.LogLine(**r) for r in rows]

    def recent_logs(self, limit: int) -> list[wire.LogLine]:
        """The last `limit` lines of every app, oldest first."""
        with self.engine.connect() as conn:
            query = sa.select(t.logs).order_by(t.logs.c.id.desc()).limit(limit)
            rows = conn.execute(query).mappings().all()
        return [wire.LogLine(**r) for r in reversed(rows)]

    def log_sizes(self, after: int) -> tuple[dict[str, int], int]:
        """Bytes of log text per app in lines after id `after`, and the last id seen."""
        with self.engine.connect() as conn:
            last = int(conn.execute(sa.select(sa.func.max(t.logs.c.id))).scalar() or after)
            rows = conn.execute(
                sa.select(t.logs.c.app, sa.func.sum(sa.func.length(t.logs.c.text)))
                .where(t.logs.c.id > after, t.logs.c.id <= last)
                .group_by(t.logs.c.app)
            ).all()
        return {app: int(size or 0) for app, size in rows}, last

    def trim_logs(self, app: str, free: int) -> int:
        """Delete `app`'s oldest lines, at least `free` bytes of them; returns the bytes freed."""
        freed, cutoff = 0, None
        with self.engine.begin() as conn:
            rows = conn.execute(
                sa.select(t.logs.c.id, sa.func.length(t.logs.c.text))
                .where(t.logs.c.app == app)
                .order_by(t.logs.c.id)
                .execution_options(yield_per=1000)
            )
            for line_id, size in rows:
                freed, cutoff = freed + int(size or 0), line_id
                if freed >= free:
                    break
            rows.close()
            if cutoff is not None:
                conn.execute(t.logs.delete().where(t.logs.c.app == app, t.logs.c.id <= cutoff))
        return freed

    # -- metering -------------------------------------------------------------------------

    def save_segments(self, rows: list[Row]) -> None:
        """Insert new usage segments, update the ones already stored (by id)."""
        with self.engine.begin() as conn:
            for row in rows:
                _upsert(conn, t.usage_segments, ["id"], row)

    def close_open_segments(self) -> int:
        """Segments a server that died left open end at their last checkpoint."""
        with self.engine.begin() as conn:
            return conn.execute(
                t.usage_segments.update()
                .where(t.usage_segments.c.open.is_(True))
                .values(open=False)
            ).rowcount

    def segments(self, since: float) -> list[Row]:
        """Usage segments that ended at `since` or later (open ones: their last checkpoint)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t.usage_segments).where(t.usage_segments.c.ended_at >= since)
            )
            return [dict(r) for r in rows.mappings()]

    def add_input_usage(self, rows: list[Row]) -> None:
        """Add to the per-function, per-day input totals."""
        table = t.input_usage
        with self.engine.begin() as conn:
            for row in rows:
                added = {name: table.c[name] + row[name] for name in INPUT_TOTALS}
                insert = _insert(conn, table).values(**row)
                keys = ["app", "function", "day"]
                conn.execute(insert.on_conflict_do_update(index_elements=keys, set_=added))

    def input_usage(self, since_day: str) -> list[Row]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t.input_usage).where(t.input_usage.c.day >= since_day))
            return [dict(r) for r in rows.mappings()]

    # -- budgets --------------------------------------------------------------------------

    def set_budget(self, scope: str, monthly_usd: float) -> None:
        row = {"scope": scope, "monthly_usd": monthly_usd, "updated_at": time.time()}
        with self.engine.begin() as conn:
            _upsert(conn, t.budgets, ["scope"], row)

    def delete_budget(self, scope: str) -> bool:
        with self.engine.begin() as conn:
            return conn.execute(t.budgets.delete().where(t.budgets.c.scope == scope)).rowcount > 0

    def budgets(self) -> dict[str, float]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t.budgets.c.scope, t.budgets.c.monthly_usd)).all()
        return {scope: usd for scope, usd in rows}

    def claim_alert(self, scope: str, month: str, level: int) -> bool:
        """Record that this alert goes out; False if it went out already (it goes out once)."""
        row = {"scope": scope, "month": month, "level": level, "sent_at": time.time()}
        with self.engine.begin() as conn:
            insert = _insert(conn, t.budget_alerts).values(**row)
            return _inserted(conn, insert.on_conflict_do_nothing(), t.budget_alerts.c.level)
