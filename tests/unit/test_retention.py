"""Retention over a real SQLite store and a fake clock: old finished calls go, in batches; recent
and unfinished ones stay; an app's logs past their bound lose their oldest lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from ember.server import retention
from ember.server.retention import Retention
from ember.server.store.base import CallRecord
from ember.server.store.sql import SqlStore

DAY = 86400.0
NOW = 100 * DAY


def call(name: str, finished_days_ago: float | None, spawned: bool = False) -> CallRecord:
    finished = None if finished_days_ago is None else NOW - finished_days_ago * DAY
    return CallRecord(
        id=name, app="a", function="f", method=None, kind="spawn" if spawned else "call",
        status="succeeded" if finished else "pending", created_at=NOW - 30 * DAY,
        payload=b"input" if spawned else None, result=b"output" if finished and spawned else None,
        finished_at=finished,
    )  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> SqlStore:
    return SqlStore(f"sqlite:///{tmp_path / 'ember.db'}")


def test_calls_finished_longer_ago_than_the_retention_go_and_the_rest_stay(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retention, "CALL_BATCH", 2)  # several batches
    old = [call(f"old-{i}", finished_days_ago=8 + i) for i in range(4)]
    old.append(call("old-spawn", finished_days_ago=7.5, spawned=True))
    kept = [call("recent", finished_days_ago=6.9), call("pending", None, spawned=True)]
    store.insert_calls(old + kept)
    Retention(store, max_log_bytes=1 << 20, call_seconds=7 * DAY, clock=lambda: NOW).enforce()
    assert all(store.get_call(c.id) is None for c in old)
    assert [store.get_call(c.id) is not None for c in kept] == [True, True]
    pending = store.get_call("pending")
    assert pending is not None and pending.payload == b"input"  # still to run: kept whole


def test_an_app_past_its_log_bound_loses_its_oldest_lines(store: SqlStore) -> None:
    lines = [{"ts": float(i), "app": "a", "function": "f", "replica": "r", "text": f"{i:09d}"}
             for i in range(10)]  # fmt: skip
    store.append_logs(lines)
    store.append_logs([{**lines[0], "app": "b"}])
    Retention(store, max_log_bytes=50, call_seconds=DAY, clock=lambda: NOW).enforce()
    left = [line.text for line in store.read_logs("a")]
    assert left == [f"{i:09d}" for i in range(5, 10)]  # 45 bytes: 90 % of the bound at most
    assert [line.text for line in store.read_logs("b")] == ["000000000"]
