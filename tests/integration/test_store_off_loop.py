"""A slow database never stalls the server: while a key creation waits on the store (a lock, a
PostgreSQL across a network), the same server answers other requests.

The server is the real one (create_app under uvicorn, on loopback, in a thread of this process)
over a real SQLite store whose `create_token` for endpoint keys waits until the test lets it
go; only the backend is the fake one, since no replica is started here.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from ember import wire
from ember.cli.server import bounded_server, listen_socket
from ember.server.app import create_app
from ember.server.settings import ServerSettings
from ember.server.store.sql import SqlStore
from tests.conftest import wait_until
from tests.fakes.backend import FakeBackend

STALL_LIMIT = 60.0  # seconds: a server whose event loop waits with the store answers after it


class StallingStore(SqlStore):
    """Creating an endpoint key waits for `release`, as on a database that takes its time."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.stalled, self.release = threading.Event(), threading.Event()

    def create_token(self, name: str, kind: str, app: str | None = None) -> wire.TokenCreated:
        if kind == "endpoint":
            self.stalled.set()
            self.release.wait(STALL_LIMIT)
            self.stalled.clear()
        return super().create_token(name, kind, app)


@pytest.fixture
def stalling(tmp_path: Path) -> Iterator[tuple[str, str, StallingStore]]:
    """A server on `StallingStore` with the app `web` deployed: (its URL, an admin token, the
    store)."""
    store = StallingStore(f"sqlite:///{tmp_path / 'ember.db'}")
    admin = store.create_token("test", kind="admin").token
    store.deploy(
        wire.DeployRequest(
            app_name="web", declared_name="web", module="m", functions=[wire.FunctionSpec(name="f")]
        )
    )
    sock = listen_socket("127.0.0.1", 0)
    settings = ServerSettings(
        home=tmp_path, port=sock.getsockname()[1], write_client_config=False, sandbox=False
    )
    server = bounded_server(create_app(settings, FakeBackend(), store), settings)  # type: ignore[arg-type]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_until(lambda: server.started)
    try:
        yield settings.url, admin, store
    finally:
        store.release.set()
        server.should_exit = True
        thread.join(timeout=60)


def test_the_server_answers_while_a_key_creation_waits_on_the_store(
    stalling: tuple[str, str, StallingStore],
) -> None:
    url, admin, store = stalling
    headers = {"Authorization": f"Bearer {admin}"}
    with ThreadPoolExecutor(1) as pool, httpx.Client(base_url=url, timeout=120) as client:
        creating = pool.submit(client.post, "/api/v1/keys", json={"app": "web"}, headers=headers)
        wait_until(store.stalled.is_set)

        assert client.get("/healthz").status_code == 200
        apps = client.get("/api/v1/apps", headers=headers)
        assert [app["name"] for app in apps.json()] == ["web"]
        assert store.stalled.is_set(), "answered only once the store call had ended"

        store.release.set()
        key = creating.result()
    assert key.status_code == 200 and key.json()["token"].startswith("ember-")
