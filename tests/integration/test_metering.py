"""Metering and budgets on a real server: metered seconds match replica lifetimes across a
restart; a spent budget refuses scale-ups (web and .remote()) but not running inputs; the
webhook hears of 80 % once, then of 100 %, and a webhook that hangs holds nothing up; a server
without metering (the benchmarks' setting) serves, records nothing and says so."""

from __future__ import annotations

import contextlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import ModuleType
from typing import ClassVar

import httpx
import pytest

import ember
from ember.sdk.exceptions import BudgetExceededError
from ember.server.settings import NO_METERING_ENV
from tests.conftest import RunningServer, free_port, start_server, wait_until
from tests.integration.helpers import cli_json, ember_cli, load, replica_count

LIFETIME = re.compile(r"replica (r-\w+) of metered\.\w+ \(v\d+\) stopped after ([\d.]+) s")


def test_metered_seconds_match_replica_lifetimes_across_a_restart(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    home = tmp_path / "home"
    port = free_port()
    logs = []
    for run in range(2):
        running = start_server(home, port=port)
        for name, value in running.env().items():
            monkeypatch.setenv(name, value)
        if run == 0:
            load("metered").app.deploy()
        ping = ember.Function.from_name("metered", "ping")
        for _ in range(2):  # a replica that lives and scales down while the server runs
            assert ping.remote(1) == 1
            wait_until(lambda: replica_count("metered", "ping") == 0, timeout=30)
        if run == 0:  # one that is running when the server stops (SIGTERM)
            marker = tmp_path / "released"
            marker.touch()
            hold = ember.Function.from_name("metered", "hold")
            assert hold.remote(str(marker)) == "released"
        assert not running.stop()
        logs.append(running.log_path.read_text())

    lifetimes = {rid: float(s) for log in logs for rid, s in LIFETIME.findall(log)}
    assert len(lifetimes) == 5, logs
    running = start_server(home, port=port)
    try:
        usage = cli_json("usage", "--by", "function", env=running.env())
    finally:
        assert not running.stop()
    metered_seconds = sum(row["replica_seconds"] for row in usage["rows"])
    assert metered_seconds == pytest.approx(sum(lifetimes.values()), rel=0.01)
    assert {row["function"] for row in usage["rows"]} == {"ping", "hold"}
    assert usage["total"]["inputs"] == 5 and usage["total"]["cost_usd"] > 0


def _deployed(
    running: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> tuple[ModuleType, dict[str, str]]:
    """The metered app deployed on `running`, which this process's SDK now talks to."""
    env = running.env()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    metered = load("metered")
    metered.app.deploy()
    return metered, env


class Hook(BaseHTTPRequestHandler):
    """A webhook that records each alert, then answers only after a long while (it hangs)."""

    alerts: ClassVar[list[dict[str, object]]] = []
    release: ClassVar[threading.Event] = threading.Event()

    def do_POST(self) -> None:
        length = int(self.headers["content-length"])
        Hook.alerts.append(json.loads(self.rfile.read(length)))
        Hook.release.wait(60)
        with contextlib.suppress(OSError):  # Ember gave up waiting long ago
            self.send_response(204)
            self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hook():  # type: ignore[no-untyped-def]
    Hook.alerts, Hook.release = [], threading.Event()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/alerts"
    Hook.release.set()
    server.shutdown()
    server.server_close()


def test_a_spent_budget_refuses_scale_ups_not_running_inputs(tmp_path, monkeypatch, hook) -> None:  # type: ignore[no-untyped-def]
    prices = tmp_path / "prices.toml"
    prices.write_text("cpu_core = 0.5\nmemory_gib = 0\n")  # a cpu=1 replica: 0.5 USD a second
    running = start_server(
        tmp_path / "home", extra_args=["--prices", str(prices), "--budget-webhook", hook]
    )
    try:
        metered, env = _deployed(running, monkeypatch)
        assert cli_json("budget", "list", env=env) == []
        assert ember_cli("budget", "set", "metered", "--monthly", "2", env=env).returncode == 0
        marker = tmp_path / "released"
        held: list[str] = []
        running_input = threading.Thread(
            target=lambda: held.append(metered.hold.remote(str(marker)))
        )
        running_input.start()  # its replica costs 0.5 USD a second from now on

        def state() -> str:
            return cli_json("budget", "list", env=env)[0]["state"]

        wait_until(lambda: state() == "exceeded", timeout=60)
        # In order, each once: the 100 % alert after the server gave up on the hanging 80 % one.
        wait_until(lambda: [a["level"] for a in Hook.alerts] == [80, 100], timeout=30)
        # .remote() that needs a new replica (hold's one is busy, web has none): 402.
        with pytest.raises(BudgetExceededError, match="monthly budget of 'metered'"):
            metered.hold.remote(str(marker))
        refused = httpx.get(f"{running.url}/metered/web/hello", timeout=60)
        assert refused.status_code == 402
        assert "ember budget set metered --monthly USD" in refused.json()["error"]["message"]
        assert replica_count("metered", "web") == 0  # no replica was started for it

        marker.touch()  # the running input finishes, budget or not
        running_input.join(timeout=60)
        assert held == ["released"]
        # A ready replica with a free slot takes the next input at once: admitted.
        assert metered.hold.remote(str(marker)) == "released"
        assert [a["level"] for a in Hook.alerts] == [80, 100]  # each went out once
        assert "budget" in running.log_path.read_text()
    finally:
        assert not running.stop()


def test_a_server_without_metering_serves_and_says_usage_and_budgets_are_off(
    tmp_path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    running = start_server(tmp_path / "home", extra_env={NO_METERING_ENV: "1"})
    try:
        metered, env = _deployed(running, monkeypatch)
        assert metered.ping.remote(7) == 7
        assert httpx.get(f"{running.url}/metered/web/hello", timeout=60).json() == {
            "message": "hello"
        }
        for command in (("usage",), ("budget", "set", "metered", "--monthly", "2")):
            refused = ember_cli(*command, env=env)
            assert refused.returncode == 1, refused.stdout
            assert f"without metering ({NO_METERING_ENV}=1" in " ".join(refused.stderr.split())
        token = {"authorization": f"Bearer {env['EMBER_TOKEN']}"}
        metrics = httpx.get(f"{running.url}/metrics", headers=token).text
        assert 'ember_replicas{app="metered",function="web"' in metrics
        assert "ember_requests_total{" not in metrics  # two requests served, none recorded
        assert "Metering off" in running.log_path.read_text()
    finally:
        assert not running.stop()
