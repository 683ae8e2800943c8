"""The store on both dialects (a SQLite file, a PostgreSQL database): what two servers sharing
one database can race on is written once and counted right; an unreachable database is named."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from ember import wire
from ember.server.store.base import CallRecord, LogFilter
from ember.server.store.database import StoreUnavailable
from ember.server.store.sql import SqlStore
from tests.conftest import free_port

SERVERS = 4  # stores on one database, as separate servers would hold them


@pytest.fixture
def stores(database_url: str) -> Iterator[list[SqlStore]]:
    opened = [SqlStore(database_url) for _ in range(SERVERS)]
    yield opened
    for store in opened:
        store.close()


def _at_once(stores: list[SqlStore], call: Callable[[SqlStore, int], Any]) -> list[Any]:
    """`call` on every store at the same time, several times each."""
    with ThreadPoolExecutor(len(stores) * 2) as pool:
        jobs = [pool.submit(call, stores[i % len(stores)], i) for i in range(len(stores) * 2)]
        return [job.result() for job in jobs]


def _deploy(app: str) -> wire.DeployRequest:
    spec = wire.FunctionSpec(name="f")
    return wire.DeployRequest(app_name=app, declared_name=app, module="m", functions=[spec])


def test_deploys_at_once_get_one_version_each(stores: list[SqlStore]) -> None:
    versions = _at_once(stores, lambda store, _: store.deploy(_deploy("app")))
    assert sorted(versions) == list(range(1, len(versions) + 1))
    app = stores[0].get_app("app")
    assert app is not None and app.version == len(versions) and app.state == "deployed"
    assert stores[1].app_version("app", len(versions)).app_name == "app"


def test_a_secret_written_at_once_is_one_secret_with_the_last_value(
    stores: list[SqlStore],
) -> None:
    _at_once(stores, lambda store, i: store.put_secret("s", f"v{i}".encode(), [f"K{i % 2}"]))
    [info] = stores[0].list_secrets()
    assert info.name == "s" and info.keys in (["K0"], ["K1"])
    assert stores[0].get_secret("s") in {f"v{i}".encode() for i in range(SERVERS * 2)}
    assert info.updated_at >= info.created_at


def test_a_spawned_call_once_finished_stays_as_it_ended(stores: list[SqlStore]) -> None:
    """A cancel on one server, then the result of the run it stopped arriving late (on another):
    the call stays cancelled, and is not re-run after a restart."""
    call = CallRecord(id="fc-1", app="a", function="f", method=None, kind="spawn",
                      status="pending", created_at=0.0, payload=b"input")  # fmt: skip
    stores[0].insert_calls([call])
    stores[0].update_call("fc-1", "running")
    stores[1].update_call("fc-1", "cancelled", b"cancelled", finished_at=1.0)
    stores[2].update_call("fc-1", "succeeded", b"output", finished_at=2.0)
    stored = stores[3].get_call("fc-1")
    assert stored is not None and (stored.status, stored.result) == ("cancelled", b"cancelled")
    assert stored.finished and stored.payload == b"input"
    assert stores[3].unfinished_spawns() == []


def test_a_volume_created_at_once_is_created_once(stores: list[SqlStore]) -> None:
    created = _at_once(stores, lambda store, _: store.create_volume("data"))
    assert sum(when is not None for when in created) == 1
    assert [name for name, _ in stores[0].list_volumes()] == ["data"]
    assert stores[1].delete_volume("data") and not stores[2].delete_volume("data")


def test_usage_totals_from_every_server_add_up(stores: list[SqlStore]) -> None:
    row = {"app": "a", "function": "f", "day": "2026-11-24", "inputs": 1, "seconds": 0.5,
           "gpu_seconds": 1.0, "gpu_cost": 0.25}  # fmt: skip
    _at_once(stores, lambda store, _: store.add_input_usage([row]))
    [total] = stores[0].input_usage("2026-11-24")
    n = SERVERS * 2
    assert (total["inputs"], total["seconds"], total["gpu_cost"]) == (n, 0.5 * n, 0.25 * n)


def test_a_budget_alert_goes_out_from_one_server_only(stores: list[SqlStore]) -> None:
    claimed = _at_once(stores, lambda store, _: store.claim_alert("*", "2026-11", 80))
    assert claimed.count(True) == 1
    stores[0].set_budget("app", 10.0)
    stores[1].set_budget("app", 20.0)
    assert stores[2].budgets() == {"app": 20.0}


def test_usage_segments_are_inserted_then_updated(stores: list[SqlStore]) -> None:
    segment = {"id": "s1", "replica": "r", "app": "a", "version": 1, "function": "f",
               "state": "ready", "gpu_type": None, "gpus": 0, "cpu": 1.0, "memory_mib": 512,
               "rate": 0.01, "started_at": 10.0, "ended_at": 12.0, "open": True}  # fmt: skip
    stores[0].save_segments([segment])
    stores[1].save_segments([{**segment, "ended_at": 15.0, "open": False}])
    assert stores[0].close_open_segments() == 0
    [stored] = stores[2].segments(0)
    assert (stored["ended_at"], stored["open"]) == (15.0, False)


def test_a_revoked_token_is_refused_by_every_store(stores: list[SqlStore]) -> None:
    created = stores[0].create_token("ci", kind="endpoint", app="web")
    record = stores[1].verify_token(created.token)
    assert record is not None and (record.kind, record.app) == ("endpoint", "web")
    assert stores[1].revoke_token(created.id)
    assert stores[0].verify_token(created.token) is None


def test_logs_are_read_filtered_and_trimmed(stores: list[SqlStore]) -> None:
    rows = [{"ts": float(i), "app": "a", "function": "f" if i % 2 else "g", "replica": "r1",
             "text": "x" * 10} for i in range(10)]  # fmt: skip
    stores[0].append_logs(rows)
    assert len(stores[1].read_logs("a", filters=LogFilter(function="f"))) == 5
    sizes, _ = stores[1].log_sizes(0)
    assert sizes == {"a": 100}
    assert stores[2].trim_logs("a", 30) == 30
    assert [line.ts for line in stores[0].read_logs("a")] == [float(i) for i in range(3, 10)]


def test_a_missing_driver_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if `ember[postgres]` were not installed
    with pytest.raises(StoreUnavailable, match=r"psycopg package: pip install 'ember\[postgres\]'"):
        SqlStore("postgresql://ember@127.0.0.1/ember")


def test_an_unreachable_database_is_named_without_its_password() -> None:
    url = f"postgresql://ember:hunter2@127.0.0.1:{free_port()}/ember"
    with pytest.raises(StoreUnavailable) as raised:
        SqlStore(url)
    message = str(raised.value)
    assert "hunter2" not in message
    assert f"ember:***@127.0.0.1:{url.rsplit(':', 1)[1].split('/')[0]}/ember" in message
    assert "EMBER_DATABASE_URL" in message
