"""Replica lifecycle: scale to zero and back, drain, redeploys, restarts of the server."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import ember
from ember.sdk.exceptions import ExecutionError
from tests.conftest import start_server, wait_until
from tests.integration.helpers import app_info, load, replica_count

APP_V1 = """
import time
import ember

app = ember.App("versioned")

@app.function(scaledown_window=1)
def version(delay: float = 0) -> str:
    time.sleep(delay)
    return "v1"
"""


def test_scale_to_zero_and_back(server) -> None:  # type: ignore[no-untyped-def]
    hello = load("hello")
    with hello.app.run():
        name = hello.app.deployed_name
        assert hello.square.remote(2) == 4
        assert replica_count(name, "square") == 1
        wait_until(lambda: replica_count(name, "square") == 0, timeout=30)
        assert hello.square.remote(3) == 9  # the next call starts a replica again
        assert replica_count(name, "square") == 1


def test_exit_hook_runs_when_replicas_stop(server) -> None:  # type: ignore[no-untyped-def]
    hello = load("hello")
    with hello.app.run():
        name = hello.app.deployed_name
        assert hello.Counter().increment.remote() == 1
    # The ephemeral app stopped with the block: its replica drained and ran @exit.
    wait_until(lambda: _exit_in_store(server, name), timeout=30)


def _exit_in_store(server, app_name: str) -> bool:  # type: ignore[no-untyped-def]
    from ember.server.store.sql import SqlStore

    store = SqlStore(f"sqlite:///{server.home / 'ember.db'}")
    try:
        return any("Counter exit hook ran" in line.text for line in store.read_logs(app_name))
    finally:
        store.close()


def test_enter_failure_is_a_clear_error(server) -> None:  # type: ignore[no-untyped-def]
    module = load("broken_enter")
    with module.app.run(), pytest.raises(ExecutionError, match="weights not found at /nowhere"):
        module.Broken().predict.remote(1)


def test_redeploy_is_a_new_version_and_running_inputs_finish(server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from ember.cli.loader import import_file

    source = tmp_path / "versioned.py"
    source.write_text(APP_V1)
    v1 = import_file(source)
    assert v1.app.deploy().version == 1
    results: list[str] = []
    slow = threading.Thread(target=lambda: results.append(v1.version.remote(3)))
    slow.start()
    wait_until(lambda: replica_count("versioned", "version") == 1)
    source.write_text(APP_V1.replace('"v1"', '"v2"'))
    v2 = import_file(source)
    assert v2.app.deploy().version == 2
    assert v2.version.remote() == "v2"
    slow.join(timeout=60)
    assert results == ["v1"]  # the input running on version 1 finished there
    assert app_info("versioned").version == 2


def test_server_restart_keeps_apps_and_spawned_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    first = start_server(home)
    for key, value in first.env().items():
        monkeypatch.setenv(key, value)
    hello = load("hello")
    hello.app.deploy()
    done = hello.square.spawn(9)
    assert done.get(timeout=60) == 81
    pending = hello.concurrent_sleep.spawn(2)  # still running when the server stops
    assert not first.stop()

    second = start_server(home, port=int(first.url.rsplit(":", 1)[1]))
    try:
        for key, value in second.env().items():
            monkeypatch.setenv(key, value)
        assert ember.FunctionCall.from_id(done.object_id).get(timeout=10) == 81
        assert ember.FunctionCall.from_id(pending.object_id).get(timeout=60).startswith("r-")
        assert ember.Function.from_name("hello", "square").remote(5) == 25
        assert app_info("hello").state == "deployed"
    finally:
        assert not second.stop()


def test_min_containers_keeps_a_warm_replica(server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from ember.cli.loader import import_file

    source = tmp_path / "warm.py"
    source.write_text(
        "import ember\napp = ember.App('warm')\n"
        "@app.function(min_containers=1, scaledown_window=0.5)\n"
        "def f():\n    return 1\n"
    )
    import_file(source).app.deploy()
    wait_until(lambda: app_info("warm").functions[0].replicas.get("ready") == 1, timeout=30)
    with pytest.warns(DeprecationWarning, match="keep_warm"):
        source.write_text(source.read_text().replace("min_containers=1", "keep_warm=2"))
        import_file(source).app.deploy()
    wait_until(lambda: app_info("warm").functions[0].replicas.get("ready") == 2, timeout=30)
