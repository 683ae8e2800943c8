"""Replicas in their own network namespaces: web_servers on one port, reachable only through the
gateway; and the hop to replicas that survives connections the replica closed."""

from __future__ import annotations

import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.conftest import RunningServer, wait_until
from tests.integration.helpers import app_info, load


def host_addresses() -> list[str]:
    """Every address of this host but loopback."""
    out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, check=True).stdout
    return out.split()


def answers(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=2):
            return True
    except OSError:
        return False


def test_web_server_replicas_share_a_port_and_only_the_gateway_reaches_it(
    server: RunningServer, tmp_path: Path
) -> None:
    load("webserver").app.deploy()
    release = tmp_path / "release"
    url = f"{server.url}/webserver/held/hold?until={release}"
    with ThreadPoolExecutor(3) as pool:
        held = [pool.submit(httpx.get, url, timeout=120) for _ in range(3)]
        wait_until(
            lambda: app_info("webserver").functions[0].replicas.get("ready") == 3, timeout=90
        )
        # Three servers listen on port 8000, each in its own namespace; the host has none.
        assert not any(answers(a, 8000) for a in ["127.0.0.1", *host_addresses()])
        release.touch()
        responses = [future.result() for future in held]
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert len({r.text for r in responses}) == 3  # three replicas served them


def test_a_connection_the_replica_closed_is_not_a_502_and_keeps_the_replica(
    server: RunningServer,
) -> None:
    """The probe's D4: after user code raises, uvicorn closes the pooled connection; the next
    request (another client's) must not fail, and the replica must not be replaced."""
    load("boom").app.deploy()
    base = f"{server.url}/boom/api"
    replicas, statuses = set(), []
    for _ in range(40):
        with httpx.Client(timeout=60) as a, httpx.Client(timeout=60) as b:
            statuses.append(a.post(base + "/boom").status_code)
            ok = b.post(base + "/ok")
            statuses.append(ok.status_code)
            replicas.add(ok.json()["replica"])
    assert set(statuses) == {500, 200} and statuses.count(200) == 40
    assert len(replicas) == 1
