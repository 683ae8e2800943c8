"""Store: every operation the server asks of its database, with the records that go in and out.

SqlStore (sql.py) implements it on SQLite and PostgreSQL. Its methods block: the server's event
loop reaches them through AsyncStore (async_store.py), on the store's own threads; the buffers
that write behind (write_behind.py) and the meter's checkpoints call them from threads already.
Records are frozen dataclasses or wire models; the batches written behind (log lines, cold
starts, usage) are plain rows named after their table's columns.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from ember import wire

Row = dict[str, Any]  # one row of a batch written behind, by column name
CallState = Literal["pending", "running", "succeeded", "failed", "cancelled"]
UNFINISHED: tuple[CallState, ...] = ("pending", "running")


def hash_token(token: str) -> str:
    """What the store keeps of a token: never the token itself."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class TokenRecord:
    id: str
    name: str
    kind: str  # admin | replica | endpoint
    app: str | None  # the one app a replica token or an endpoint key reaches


@dataclass(frozen=True)
class AppRecord:
    name: str
    state: str  # deployed | stopped
    version: int
    ephemeral: bool
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class CallRecord:
    """A call: every `.remote()` / `.map` request, and each `.spawn()` with its input and,
    once it finished, its output frame."""

    id: str
    app: str
    function: str
    method: str | None
    kind: str  # call | map | spawn
    status: CallState
    created_at: float
    params: str = ""
    inputs: int = 1
    payload: bytes | None = None  # a spawned call's input frame
    result: bytes | None = None  # its output frame
    finished_at: float | None = None

    @property
    def finished(self) -> bool:
        return self.status not in UNFINISHED


@dataclass(frozen=True)
class LogFilter:
    """Which of an app's log lines to read: of one function, since a time, of one replica (an
    id or its first characters)."""

    function: str | None = None
    since: float | None = None
    replica: str | None = None


class Store(Protocol):
    """All persistent state. Each method is one short transaction; a method that finds nothing
    returns None or False, never raises for it. Writes that two servers sharing one database can
    race (a deploy's version, a secret, a volume, usage, budgets, alerts) are single upserts."""

    def close(self) -> None: ...

    # -- tokens: only their hashes are kept -------------------------------------------------

    def create_token(self, name: str, kind: str, app: str | None = None) -> wire.TokenCreated:
        """A new token; the only time its secret is seen."""
        ...

    def verify_token(self, token: str) -> TokenRecord | None:
        """The live (not revoked) token's record."""
        ...

    def list_tokens(self, kinds: Iterable[str]) -> list[wire.TokenInfo]: ...

    def revoke_token(self, token_id: str) -> bool:
        """False if there is no such token."""
        ...

    def revoke_tokens(self, kind: str, name: str) -> None:
        """Revoke every live token of `kind` called `name`."""
        ...

    # -- apps -------------------------------------------------------------------------------

    def deploy(self, request: wire.DeployRequest) -> int:
        """Store a new version of the app and make it current; returns the version number."""
        ...

    def get_app(self, name: str) -> AppRecord | None: ...

    def list_apps(self) -> list[AppRecord]:
        """Every app, deployed or stopped, by name."""
        ...

    def app_version(self, name: str, version: int) -> wire.DeployRequest: ...

    def set_app_state(self, name: str, state: str) -> None: ...

    def delete_app(self, name: str) -> None:
        """Forget an app and its versions (ephemeral apps, once their run ends)."""
        ...

    # -- calls ------------------------------------------------------------------------------

    def insert_calls(self, calls: list[CallRecord]) -> None: ...

    def update_call(
        self,
        call_id: str,
        status: CallState,
        result: bytes | None = None,
        finished_at: float | None = None,
    ) -> None:
        """Move an unfinished call on; a finished one stays as it ended (a result that lands
        after a cancel does not undo it)."""
        ...

    def get_call(self, call_id: str) -> CallRecord | None: ...

    def delete_calls_finished_before(self, before: float, limit: int) -> int:
        """Delete up to `limit` calls that finished before `before` (wall-clock seconds), a
        spawned call's input and output with them; returns how many went."""
        ...

    def unfinished_spawns(self) -> list[CallRecord]:
        """Spawned calls still pending or running (after a restart: to run again)."""
        ...

    # -- secrets: sealed by the caller, never seen in clear here ----------------------------

    def put_secret(self, name: str, sealed: bytes, keys: list[str]) -> None:
        """Create the secret, or replace its values."""
        ...

    def get_secret(self, name: str) -> bytes | None: ...

    def list_secrets(self) -> list[wire.SecretInfo]: ...

    def delete_secret(self, name: str) -> bool: ...

    # -- volumes (their files live in a VolumeStorage) --------------------------------------

    def create_volume(self, name: str) -> float | None:
        """Record a new volume; its creation time, or None if it exists already."""
        ...

    def get_volume(self, name: str) -> float | None:
        """The volume's creation time, or None if there is no such volume."""
        ...

    def list_volumes(self) -> list[tuple[str, float]]:
        """(name, creation time) of every volume, by name."""
        ...

    def delete_volume(self, name: str) -> bool: ...

    # -- logs and cold starts ---------------------------------------------------------------

    def insert_cold_starts(self, rows: list[Row]) -> None: ...

    def append_logs(self, rows: list[Row]) -> None: ...

    def read_logs(
        self, app: str, after: int = 0, limit: int = 1000, filters: LogFilter | None = None
    ) -> list[wire.LogLine]:
        """The app's lines with ids after `after`, oldest first."""
        ...

    def recent_logs(self, limit: int) -> list[wire.LogLine]:
        """The last `limit` lines of every app, oldest first."""
        ...

    def log_sizes(self, after: int) -> tuple[dict[str, int], int]:
        """Bytes of log text per app in lines after id `after`, and the last id seen."""
        ...

    def trim_logs(self, app: str, free: int) -> int:
        """Delete `app`'s oldest lines, at least `free` bytes of them; returns the bytes freed."""
        ...

    # -- metering ---------------------------------------------------------------------------

    def save_segments(self, rows: list[Row]) -> None:
        """Insert new usage segments, update the ones already stored (by id)."""
        ...

    def close_open_segments(self) -> int:
        """Segments a server that died left open end at their last checkpoint."""
        ...

    def segments(self, since: float) -> list[Row]:
        """Usage segments that ended at `since` or later (open ones: their last checkpoint)."""
        ...

    def add_input_usage(self, rows: list[Row]) -> None:
        """Add to the per-function, per-day input totals."""
        ...

    def input_usage(self, since_day: str) -> list[Row]: ...

    # -- budgets ----------------------------------------------------------------------------

    def set_budget(self, scope: str, monthly_usd: float) -> None: ...

    def delete_budget(self, scope: str) -> bool: ...

    def budgets(self) -> dict[str, float]:
        """Monthly USD by scope (an app's name, or the server's)."""
        ...

    def claim_alert(self, scope: str, month: str, level: int) -> bool:
        """Record that this alert goes out; False if it went out already (it goes out once,
        whichever server sends it)."""
        ...
