"""SIGTERM with work in flight: bounded by --shutdown-grace, then a clear error, and no orphans."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from ember.cli.loader import import_file
from ember.sdk.exceptions import ExecutionError
from tests.conftest import alive, start_server, wait_until
from tests.integration.helpers import app_info

APP = """
import asyncio
import time

import ember

app = ember.App("slow")


@app.function(timeout=300)
def nap(seconds: float, marker: str) -> str:
    open(marker, "w").close()
    time.sleep(seconds)
    return "rested"


@app.function()
@ember.asgi_app()
def web():
    from fastapi import FastAPI

    api = FastAPI()

    @api.get("/nap")
    async def web_nap(seconds: float, marker: str):
        open(marker, "w").close()
        await asyncio.sleep(seconds)
        return "rested"

    return api
"""

GRACE = 2
REPLICA_STOP = 10  # the backend's bound on a replica's own stop (@exit hooks)


def in_thread(work: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(work())
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def test_sigterm_waits_the_grace_then_fails_what_is_left_and_stops_every_replica(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    running = start_server(tmp_path / "home", extra_args=["--shutdown-grace", str(GRACE)])
    try:
        for key, value in running.env().items():
            monkeypatch.setenv(key, value)
        source = tmp_path / "slow.py"
        source.write_text(APP)
        module = import_file(source)
        module.app.deploy()
        call_marker, web_marker = tmp_path / "call-napping", tmp_path / "web-napping"
        caller, call_outcome = in_thread(lambda: module.nap.remote(90, str(call_marker)))
        browser, web_outcome = in_thread(
            lambda: httpx.get(
                f"{running.url}/slow/web/nap",
                params={"seconds": 90, "marker": str(web_marker)},
                timeout=120,
            )
        )
        wait_until(lambda: call_marker.exists() and web_marker.exists())  # both on replicas
        replicas = running.replica_pids()  # with their sandboxes
        shown = {f.name: f.replicas for f in app_info("slow").functions}
        assert shown == {"nap": {"ready": 1}, "web": {"ready": 1}}
        running.process.send_signal(signal.SIGTERM)
        running.process.wait(timeout=GRACE + REPLICA_STOP + 10)
    finally:
        running.process.kill()
    caller.join(timeout=10)
    browser.join(timeout=10)
    (error,) = call_outcome
    assert isinstance(error, ExecutionError), error
    assert "the server shut down before this function call finished" in str(error)
    assert f"it waits {GRACE} s, --shutdown-grace" in str(error)
    (response,) = web_outcome
    assert response.status_code == 503
    assert response.json()["error"]["type"] == "ServerShuttingDown"
    assert "before this web request finished" in response.json()["error"]["message"]
    wait_until(lambda: not [p for p in replicas if alive(p)], timeout=10)
    log = running.log_path.read_text()
    assert (
        f"waiting up to {GRACE} s (--shutdown-grace) for 1 function call, 1 web request in flight"
        in log
    )
