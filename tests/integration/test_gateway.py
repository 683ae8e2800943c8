"""Web endpoints through the gateway: real server, real replicas, real HTTP clients."""

from __future__ import annotations

import asyncio
import ssl
import threading
from pathlib import Path

import httpx
import pytest

from ember.sdk.exceptions import ConnectionError, InvalidError
from tests.conftest import start_server, wait_until
from tests.integration.helpers import cli_json, ember_cli, load, replica_count


@pytest.fixture
def web(server):  # type: ignore[no-untyped-def]
    module = load("web")
    module.app.deploy()
    return module


def test_asgi_app_json_and_request_id(server, web) -> None:  # type: ignore[no-untyped-def]
    response = httpx.get(f"{server.url}/web/api/hello", params={"name": "ember"}, timeout=60)
    assert response.status_code == 200
    assert response.json() == {"message": "hello ember"}
    assert len(response.headers["x-request-id"]) == 32
    posted = httpx.post(f"{server.url}/web/api/echo", json={"a": [1, 2]}, timeout=60)
    assert posted.json() == {"a": [1, 2]}


def test_deploy_prints_endpoint_urls(server) -> None:  # type: ignore[no-untyped-def]
    result = ember_cli("deploy", "tests/apps/web.py", env=server.env())
    assert result.returncode == 0, result.stderr
    assert f"{server.url}/web/api/" in result.stdout
    shown = cli_json("app", "show", "web", env=server.env())
    urls = {f["name"]: f["web_url"] for f in shown["functions"]}
    assert urls["square"] == f"{server.url}/web/square/"
    assert urls["not_web"] is None


def test_sse_streams_incrementally(server, web) -> None:  # type: ignore[no-untyped-def]
    with (
        httpx.Client(timeout=60) as client,
        client.stream("GET", f"{server.url}/web/api/stream") as response,
    ):
        lines = response.iter_lines()
        assert next(lines) == "data: first"
        # The last event is only sent after this release: the first arrived on its own.
        assert client.post(f"{server.url}/web/api/release").status_code == 200
        rest = [line for line in lines if line]
    assert rest == ["data: last"]


def test_fastapi_endpoint_with_keys_and_modal_headers(server, web) -> None:  # type: ignore[no-untyped-def]
    key = cli_json("key", "create", "--app", "web", env=server.env())
    url = f"{server.url}/web/square/"
    bearer = httpx.post(
        url, json={"x": 7}, headers={"Authorization": f"Bearer {key['token']}"}, timeout=60
    )
    assert bearer.json() == {"square": 49}
    modal = httpx.post(
        url,
        json={"x": 3},
        headers={"Modal-Key": key["id"], "Modal-Secret": key["token"]},
        timeout=60,
    )
    assert modal.json() == {"square": 9}
    revoke = ember_cli("key", "revoke", key["id"], env=server.env())
    assert revoke.returncode == 0, revoke.stderr
    after = httpx.post(url, json={"x": 3}, headers={"Authorization": f"Bearer {key['token']}"})
    assert after.status_code == 401


def test_unauthenticated_flood_never_starts_a_replica(server, web) -> None:  # type: ignore[no-untyped-def]
    url = f"{server.url}/web/square/"

    async def flood() -> list[int]:
        async with httpx.AsyncClient() as client:
            variants = [
                {},
                {"Authorization": "Bearer ember-wrong"},
                {"Modal-Key": "k", "Modal-Secret": "s"},
            ]
            responses = await asyncio.gather(
                *(client.post(url, json={"x": 1}, headers=variants[i % 3]) for i in range(60))
            )
        return [r.status_code for r in responses]

    assert set(asyncio.run(flood())) == {401}
    assert replica_count("web", "square") == 0
    body = httpx.post(url, json={"x": 1}).json()
    assert "ember key create --app web" in body["error"]["message"]


def test_unknown_targets_are_404_and_tell_nothing(server, web) -> None:  # type: ignore[no-untyped-def]
    """An unknown app, an unknown function, a function that is not a web endpoint: one answer,
    which names no function of the app (the probe's D16)."""
    for path in ("/nope/api/hello", "/web/nope/", "/web/not_web/"):
        response = httpx.get(server.url + path)
        assert response.status_code == 404
        app, function = path.split("/")[1:3]
        assert response.json()["error"]["message"] == f"no web endpoint at /{app}/{function}/"


def test_oversized_body_is_413(server, web) -> None:  # type: ignore[no-untyped-def]
    response = httpx.post(
        f"{server.url}/web/api/echo", content=b"x" * (33 * 1024 * 1024), timeout=60
    )
    assert response.status_code == 413


def test_web_server_in_a_separate_process(server, web) -> None:  # type: ignore[no-untyped-def]
    response = httpx.get(f"{server.url}/web/files/hello.txt", timeout=60)
    assert response.status_code == 200
    assert response.text == "served by a separate HTTP process\n"


def test_web_server_that_never_listens(server, web) -> None:  # type: ignore[no-untyped-def]
    key = cli_json("key", "create", "--app", "web", env=server.env())
    response = httpx.get(
        f"{server.url}/web/never_listens/",
        headers={"Authorization": f"Bearer {key['token']}"},
        timeout=60,
    )
    assert response.status_code == 502
    assert "did not listen on port 18766 within 2 s" in response.json()["error"]["message"]
    wait_until(lambda: replica_count("web", "never_listens") == 0)
    logs = ember_cli("app", "logs", "web", env=server.env()).stdout
    assert "did not listen on port 18766" in logs


def test_scale_from_zero_under_concurrent_requests(server, web) -> None:  # type: ignore[no-untyped-def]
    assert replica_count("web", "api") == 0

    async def burst() -> list[int]:
        async with httpx.AsyncClient(timeout=120) as client:
            responses = await asyncio.gather(
                *(
                    client.get(f"{server.url}/web/api/slow", params={"seconds": 0.2})
                    for _ in range(20)
                )
            )
        return [r.status_code for r in responses]

    assert asyncio.run(burst()) == [200] * 20


def test_scale_down_drains_in_flight_requests(server, web, tmp_path) -> None:  # type: ignore[no-untyped-def]
    release = tmp_path / "release"
    results: list[httpx.Response] = []
    held = threading.Thread(
        target=lambda: results.append(
            httpx.get(f"{server.url}/web/api/until", params={"path": str(release)}, timeout=60)
        )
    )
    held.start()
    wait_until(lambda: Path(f"{release}.started").exists())  # in flight on the replica
    web.app.deploy()  # a new version: the old replica drains, then stops
    release.touch()
    held.join(timeout=60)
    assert results[0].status_code == 200
    assert results[0].json() == {"released": str(release)}


def test_websocket_passes_through(server, web) -> None:  # type: ignore[no-untyped-def]
    from websockets.sync.client import connect

    ws_url = server.url.replace("http", "ws") + "/web/api/ws"
    with connect(ws_url, open_timeout=60) as socket:
        socket.send("hi")
        assert socket.recv(timeout=30) == "echo: hi"


def test_tls_with_a_self_signed_certificate(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    running = start_server(tmp_path / "home", tls_self_signed=True)
    try:
        cert = running.home / "tls" / "cert.pem"
        assert running.url.startswith("https://localhost:")
        for key, value in running.env().items():
            monkeypatch.setenv(key, value)
        load("web").app.deploy()
        verify = ssl.create_default_context(cafile=cert)
        response = httpx.get(f"{running.url}/web/api/hello", verify=verify, timeout=60)
        assert response.json() == {"message": "hello world"}
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{running.url}/healthz")  # an unverified certificate is refused
        # Inputs take the SDK's lean client, over TLS as well.
        hello = load("hello")
        hello.app.deploy()
        assert hello.square.remote(7) == 49
        assert list(hello.square.map([1, 2, 3])) == [1, 4, 9]
        monkeypatch.delenv("EMBER_CA_CERT")
        with pytest.raises(ConnectionError, match="certificate verify failed"):
            hello.square.remote(2)
    finally:
        assert not running.stop()


def test_wsgi_app(server, web) -> None:  # type: ignore[no-untyped-def]
    response = httpx.get(f"{server.url}/web/legacy/some/path", timeout=60)
    assert response.status_code == 200
    assert response.text == "wsgi says /some/path"


def test_host_based_urls_with_a_domain(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    running = start_server(tmp_path / "home", extra_args=["--domain", "ember.test"])
    try:
        for key, value in running.env().items():
            monkeypatch.setenv(key, value)
        deployed = load("web").app.deploy()
        assert deployed.urls["api"] == "http://web--api.ember.test/"
        response = httpx.get(
            f"{running.url}/hello",
            params={"name": "host"},
            headers={"Host": "web--api.ember.test"},
            timeout=60,
        )
        assert response.json() == {"message": "hello host"}
        # Host names ignore case: the URL printed for an app with capitals reaches it, and a
        # name differing from it only in case is refused (it would share that URL).
        camel = load("web").app.deploy("CamelWeb")
        assert camel.urls["api"] == "http://camelweb--api.ember.test/"
        response = httpx.get(
            f"{running.url}/hello",
            params={"name": "camel"},
            headers={"Host": "camelweb--api.ember.test"},
            timeout=60,
        )
        assert response.json() == {"message": "hello camel"}
        with pytest.raises(InvalidError, match="differs only in case from the existing app"):
            load("web").app.deploy("camelweb")
    finally:
        assert not running.stop()


def test_app_names_that_start_like_a_server_path_are_reachable(server) -> None:  # type: ignore[no-untyped-def]
    for name in ("docsite", "healthz-probe"):
        result = ember_cli("deploy", "tests/apps/web.py", "--name", name, env=server.env())
        assert result.returncode == 0, result.stderr
        response = httpx.get(f"{server.url}/{name}/api/hello", timeout=60)
        assert response.json() == {"message": "hello world"}
    assert httpx.get(f"{server.url}/healthz").json()["status"] == "ok"
    assert httpx.get(f"{server.url}/docs").status_code == 401  # the API's, which needs a token


def test_client_disconnect_frees_the_slot(server, web) -> None:  # type: ignore[no-untyped-def]
    url = f"{server.url}/web/one_at_a_time"
    with httpx.Client(timeout=60) as client, client.stream("GET", url + "/forever") as stream:
        assert next(stream.iter_lines()) == "data: tick"
    # The endless stream held the only slot; hanging up must release it for the next request.
    assert httpx.get(url + "/nap", params={"seconds": 0}, timeout=30).json() == {"napped": 0}


def test_full_queue_is_503_with_retry_after(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    running = start_server(tmp_path / "home", extra_args=["--max-queued-requests", "2"])
    try:
        for key, value in running.env().items():
            monkeypatch.setenv(key, value)
        load("web").app.deploy()
        url = f"{running.url}/web/one_at_a_time"

        async def three_behind_a_held_slot() -> tuple[httpx.Response, list[httpx.Response]]:
            async with httpx.AsyncClient(timeout=60) as client:
                async with client.stream("GET", url + "/forever") as stream:
                    assert await anext(stream.aiter_lines()) == "data: tick"  # holds the slot
                    naps = [
                        asyncio.ensure_future(client.get(url + "/nap", params={"seconds": 0}))
                        for _ in range(3)
                    ]
                    # Two wait for the slot; the third is refused at once, whichever it is.
                    done, waiting = await asyncio.wait(naps, return_when=asyncio.FIRST_COMPLETED)
                    assert len(done) == 1
                # The stream is closed: its slot goes to the two that waited.
                return done.pop().result(), list(await asyncio.gather(*waiting))

        shed, served = asyncio.run(three_behind_a_held_slot())
        assert shed.status_code == 503
        assert shed.headers["retry-after"] == "1"
        assert "waiting for a replica" in shed.json()["error"]["message"]
        assert [r.json() for r in served] == [{"napped": 0}, {"napped": 0}]
    finally:
        assert not running.stop()


def test_half_open_client_gets_408_and_holds_nothing(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import socket

    running = start_server(tmp_path / "home", extra_args=["--client-timeout", "1"])
    try:
        for key, value in running.env().items():
            monkeypatch.setenv(key, value)
        load("web").app.deploy()
        port = int(running.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=30) as stalled:
            stalled.sendall(
                b"POST /web/api/echo HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
            )
            reply = ""  # nothing more is sent; read the whole answer
            while not reply.endswith("}"):
                reply += stalled.recv(4096).decode()
        assert reply.startswith("HTTP/1.1 408")
        assert "no request data for 1 s" in reply
        assert replica_count("web", "api") == 0  # the body never arrived: no replica was woken
        assert httpx.post(f"{running.url}/web/api/echo", json={"ok": 1}, timeout=60).json() == {
            "ok": 1
        }
    finally:
        assert not running.stop()
