"""/metrics on a real server: who may read it, labels (app and function, never paths), figures
that move with traffic, replica-served metrics re-exported and kept when replicas stop."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import start_server, wait_until
from tests.integration.helpers import cli_json, load, replica_count


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(samples, name: str, **labels: str) -> float:  # type: ignore[no-untyped-def]
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_need_an_admin_token_and_move_with_traffic(server) -> None:  # type: ignore[no-untyped-def]
    metered = load("metered")
    metered.app.deploy()
    key = cli_json("key", "create", "--app", "metered", env=server.env())["token"]
    url = f"{server.url}/metrics"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"Authorization": f"Bearer {key}"}).status_code == 401
    admin = {"Authorization": f"Bearer {server.token}"}

    assert metered.ping.remote(1) == 1
    assert httpx.get(f"{server.url}/metered/web/hello", timeout=60).status_code == 200
    assert httpx.get(f"{server.url}/metered/web/nowhere/{'x' * 50}", timeout=60).status_code == 404
    assert httpx.get(f"{server.url}/metered/no-such-function/", timeout=60).status_code == 404
    text = httpx.get(url, headers=admin).text
    samples = _samples(text)
    call = {"app": "metered", "function": "ping"}
    assert _value(samples, "ember_requests_total", **call, kind="call", status="200") == 1
    assert _value(samples, "ember_requests_total", app="metered", function="web", kind="web",
                  status="200") == 1  # fmt: skip
    assert _value(samples, "ember_requests_total", app="metered", function="web", kind="web",
                  status="404") == 1  # the app's own 404, under its deployed name  # fmt: skip
    assert _value(samples, "ember_cold_start_seconds_count", **call, tier="fresh") == 1
    assert _value(samples, "ember_replicas", **call, state="ready") == 1
    assert _value(samples, "ember_request_duration_seconds_count", **call, kind="call") == 1
    assert "nowhere" not in text and "no-such-function" not in text  # paths are never labels
    labels = {k for (_, pairs) in samples for k, _ in pairs}
    assert labels <= {"app", "function", "kind", "status", "state", "tier", "le", "scope"}

    for x in range(3):
        metered.ping.remote(x)
    samples = _samples(httpx.get(url, headers=admin).text)
    assert _value(samples, "ember_requests_total", **call, kind="call", status="200") == 4
    wait_until(lambda: replica_count("metered", "ping") == 0)  # scaled down: billed time settles
    samples = _samples(httpx.get(url, headers=admin).text)
    assert _value(samples, "ember_replica_seconds_total", **call) > 0
    assert _value(samples, "ember_cost_usd_total", **call) > 0


def test_replica_metrics_are_re_exported_and_survive_the_replica(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # --metrics-public: Prometheus scrapes without a token.
    running = start_server(tmp_path / "home", extra_args=["--metrics-public"])
    try:
        for name, value in running.env().items():
            monkeypatch.setenv(name, value)
        metered = load("metered")
        metered.app.deploy()
        assert metered.Engine().generate.remote(5) == 5
        assert metered.Engine().generate.remote(2) == 7
        engine = {"app": "metered", "function": "Engine"}

        def tokens() -> float:
            samples = _samples(httpx.get(f"{running.url}/metrics").text)
            return _value(samples, "demo_tokens_total", **engine)

        wait_until(lambda: tokens() == 7, timeout=30)  # collected every few seconds
        wait_until(lambda: replica_count("metered", "Engine") == 0, timeout=30)
        samples = _samples(httpx.get(f"{running.url}/metrics").text)
        assert _value(samples, "demo_tokens_total", **engine) == 7  # kept once it stopped
        assert ("demo_running", frozenset(engine.items())) not in samples  # a gauge goes with it
    finally:
        assert not running.stop()
