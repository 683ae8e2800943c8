"""`ember server` on PostgreSQL (a throwaway cluster): two servers on one database serve an app
deployed through either, a key revoked on one is refused by the other within seconds; deployed
apps go on serving while the database is down and changes fail cleanly until it is back; a
database that cannot be reached stops the server at start with a clear error."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet

from tests.conftest import RunningServer, free_port, start_server, wait_until
from tests.integration.helpers import cli_json, ember_cli, load
from tests.postgres import PostgresCluster, skip_without_postgres


@pytest.fixture
def two_servers(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[RunningServer, RunningServer]]:
    """Two servers, each with its own home, sharing the database and the key to its secrets."""
    shared = {
        "EMBER_DATABASE_URL": postgres_url,
        "EMBER_SECRET_KEY": Fernet.generate_key().decode(),
    }
    first = start_server(tmp_path / "first", extra_env=shared)
    second = start_server(tmp_path / "second", extra_env=shared)
    for key, value in first.env().items():
        monkeypatch.setenv(key, value)
    yield first, second
    leftovers = first.stop() + second.stop()
    assert not leftovers, f"replica processes outlived their server: {leftovers}"


def _square(server: RunningServer, token: str, x: int) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.post(f"{server.url}/web/square/", json={"x": x}, headers=headers, timeout=60)


def test_an_app_deployed_through_one_server_is_served_by_both(two_servers) -> None:  # type: ignore[no-untyped-def]
    first, second = two_servers
    load("web").app.deploy()
    key = cli_json("key", "create", "--app", "web", env=first.env())
    assert _square(first, key["token"], 4).json() == {"square": 16}
    # The second server picks the deploy up from the database within seconds.
    served = wait_until(lambda: (r := _square(second, key["token"], 5)).status_code != 404 and r)
    assert served.json() == {"square": 25}
    apps = cli_json("app", "list", env=second.env())
    assert [app["name"] for app in apps] == ["web"]
    hello = load("hello")  # calls and spawned calls (their blobs encrypted) on PostgreSQL
    hello.app.deploy()
    assert hello.square.remote(6) == 36
    assert hello.square.spawn(7).get(timeout=60) == 49

    kept = cli_json("key", "create", "--app", "web", env=first.env())
    revoke = ember_cli("key", "revoke", key["id"], env=first.env())
    assert revoke.returncode == 0, revoke.stderr
    wait_until(lambda: _square(second, key["token"], 1).status_code == 401, timeout=10)

    stop = ember_cli("app", "stop", "web", env=first.env())
    assert stop.returncode == 0, stop.stderr
    wait_until(lambda: _square(second, kept["token"], 1).status_code == 404)


def test_deployed_apps_go_on_serving_while_the_database_is_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = PostgresCluster(skip_without_postgres(), free_port())  # its own, to stop and start
    cluster.create()
    cluster.start()
    server = start_server(
        tmp_path / "home", extra_env={"EMBER_DATABASE_URL": cluster.new_database()}
    )
    try:
        for key, value in server.env().items():
            monkeypatch.setenv(key, value)
        load("web").app.deploy()
        key = cli_json("key", "create", "--app", "web", env=server.env())
        assert _square(server, key["token"], 3).json() == {"square": 9}

        cluster.stop()
        assert _square(server, key["token"], 4).json() == {"square": 16}
        refused = ember_cli("key", "create", "--app", "web", env=server.env())
        assert refused.returncode != 0
        assert "the database is unreachable" in refused.stderr + refused.stdout

        cluster.start()  # it recovers once the database is back
        wait_until(
            lambda: ember_cli("key", "create", "--app", "web", env=server.env()).returncode == 0
        )
        assert _square(server, key["token"], 5).json() == {"square": 25}
    finally:
        leftovers = server.stop()
        cluster.stop()
        cluster.remove()
    assert not leftovers, f"replica processes outlived the server: {leftovers}"


def test_an_unreachable_database_stops_the_server_at_start(tmp_path: Path) -> None:
    url = f"postgresql://ember:hunter2@127.0.0.1:{free_port()}/ember"
    started = subprocess.run(
        [sys.executable, "-m", "ember.cli.main", "server", "--port", str(free_port()),
         "--database-url", url],
        env={"EMBER_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert started.returncode == 1
    assert "cannot open the database postgresql+psycopg://ember:***@127.0.0.1" in started.stderr
    assert "hunter2" not in started.stderr + started.stdout
