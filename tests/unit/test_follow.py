"""Servers sharing one database: what is deployed or stopped through one is served or stopped by
the other at its next `Deployments.follow`, with its images built and its sources written there;
a deploy made here while those images build wins."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ember import wire
from ember.resources import Resources
from ember.server.deployments import Deployments
from ember.server.pools import PoolRegistry
from ember.server.store.async_store import AsyncStore
from ember.server.store.sql import SqlStore
from tests.fakes.clock import FakeClock


async def _no_secret(name: str, values: dict[str, str]) -> None:
    raise AssertionError("these apps have no inline secrets")


def _server(store: AsyncStore, home: Path) -> Deployments:
    pools = PoolRegistry(on_wait=lambda: None, clock=FakeClock())
    return Deployments(store, home / "apps", pools, _no_secret, lambda spec: (Resources(), []))


def _request(answer: int) -> wire.DeployRequest:
    return wire.DeployRequest(
        app_name="app", declared_name="app", module="main", functions=[wire.FunctionSpec(name="f")],
        files={"main.py": f"ANSWER = {answer}\n"},
    )  # fmt: skip


@pytest.fixture
def store(database_url: str) -> Iterator[AsyncStore]:
    opened = AsyncStore(SqlStore(database_url))
    yield opened
    opened.close()


async def test_a_deploy_and_a_stop_through_one_server_reach_the_other(
    store: AsyncStore, tmp_path: Path
) -> None:
    first, second = _server(store, tmp_path / "first"), _server(store, tmp_path / "second")
    built: list[wire.DeployRequest] = []

    async def build(request: wire.DeployRequest) -> None:
        built.append(request)

    await first.deploy(_request(1))
    [adopted] = await second.follow(build)
    assert adopted.version == 1 and [r.app_name for r in built] == ["app"]
    assert adopted.source_dir is not None
    assert (adopted.source_dir / "main.py").read_text() == "ANSWER = 1\n"
    assert await second.follow(build) == []  # nothing new: nothing built again
    assert len(built) == 1

    await first.stop("app")
    await second.follow(build)
    assert second.find("app") is None


async def test_a_deploy_here_while_the_images_build_wins(store: AsyncStore, tmp_path: Path) -> None:
    first, second = _server(store, tmp_path / "first"), _server(store, tmp_path / "second")
    await first.deploy(_request(1))

    async def build(request: wire.DeployRequest) -> None:
        await second.deploy(_request(2))  # through this server, while v1's images build

    assert await second.follow(build) == []
    current = second.find("app")
    assert current is not None and current.version == 2
