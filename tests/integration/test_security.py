"""Security, tested as an attacker would: a replica's own token turned on the server, forged and
escaping deploys, hostile names, secrets printed by accident, and what lies on disk afterwards.

Each refusal is checked for a clear 4xx and for changing nothing."""

from __future__ import annotations

import base64
import grp
import json
import os
import stat
from pathlib import Path
from typing import Any

import httpx
import pytest

import ember
from ember.image_spec import image_hash
from tests.conftest import RunningServer
from tests.integration.helpers import cli_json, ember_cli, load

PASSWORD = "Sup3rS3cretPassw0rd-XYZZY"
PEM_LINES = ["-----BEGIN KEY-----", "AAAAlinetwoSECRETPEMbody42", "-----END KEY-----"]


def api(
    server: RunningServer, method: str, path: str, token: str | None = None, **kwargs: Any
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token or server.token}"}
    return httpx.request(method, server.url + path, headers=headers, timeout=60, **kwargs)


def test_a_replica_token_reaches_only_its_own_app(server: RunningServer, tmp_path: Path) -> None:
    env = server.env()
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text("the victim's data")
    for command in (
        ("volume", "create", "victim-data"),
        ("volume", "put", "victim-data", str(secret_file), "/secret.txt"),
        ("secret", "create", "victim-creds", f"PASSWORD={PASSWORD}"),
    ):
        assert ember_cli(*command, env=env).returncode == 0
    victim = load("hello")
    victim.app.deploy()
    victim_call = victim.square.spawn(7)
    intruder = load("intruder")
    intruder.app.deploy()
    tokens_before = api(server, "GET", "/api/v1/tokens").json()

    refused = [
        ("POST", "/api/v1/tokens", {"name": "from-replica"}),
        ("GET", "/api/v1/tokens", None),
        ("POST", "/api/v1/keys", {"app": "hello", "name": "stolen"}),
        ("GET", "/api/v1/secrets", None),
        ("POST", "/api/v1/secrets", {"name": "planted", "values": {"A": "12345678"}}),
        ("POST", "/api/v1/apps", {"app_name": "x"}),
        ("POST", "/api/v1/apps/hello/stop", None),
        ("GET", "/api/v1/apps/hello/logs", None),
        ("POST", "/api/v1/apps/hello/functions/square/call", None),
        ("GET", "/api/v1/volumes", None),
        ("GET", "/api/v1/volumes/victim-data/entries", None),
        ("GET", "/api/v1/volumes/victim-data/files?path=/secret.txt", None),
        ("POST", "/api/v1/volumes", {"name": "victim-data", "exist_ok": True}),
        ("DELETE", "/api/v1/volumes/intruder-data", None),
        ("GET", f"/api/v1/images/{'0' * 64}/logs", None),
        ("GET", "/openapi.json", None),
    ]
    hidden = [
        ("GET", f"/api/v1/calls/{victim_call.object_id}", None),
        ("POST", f"/api/v1/calls/{victim_call.object_id}/cancel", None),
    ]
    allowed = [
        ("GET", "/api/v1/volumes/intruder-data/entries", None),
        ("POST", "/api/v1/volumes", {"name": "intruder-data", "exist_ok": True}),
    ]
    answers = intruder.probe.remote(refused + hidden + allowed)

    for (method, path, _), (status, body) in zip(refused, answers, strict=False):
        assert status == 403, (method, path, status, body)
        assert (
            "a replica's token reaches only its own app's" in json.loads(body)["error"]["message"]
        )
    assert [status for status, _ in answers[len(refused) :]] == [404, 404, 200, 200]
    # Nothing changed: no token minted, the victim still deployed, its call not cancelled.
    assert api(server, "GET", "/api/v1/tokens").json() == tokens_before
    assert api(server, "GET", "/api/v1/keys").json() == []
    assert [s["name"] for s in api(server, "GET", "/api/v1/secrets").json()] == ["victim-creds"]
    assert api(server, "GET", "/api/v1/apps/hello").json()["state"] == "deployed"
    assert victim_call.get(timeout=60) == 49
    # What a replica needs still works: its own app's calls, spawned calls included.
    assert intruder.spawn_and_read_own_call.remote() == "intruder"

    stolen = intruder.stolen_token.remote()
    own_volume = "/api/v1/volumes/intruder-data/entries"
    assert api(server, "GET", own_volume, token=stolen).status_code == 200
    assert ember_cli("app", "stop", "intruder", env=env).returncode == 0
    assert api(server, "GET", own_volume, token=stolen).status_code == 401


def test_endpoint_keys_reach_only_their_app(server: RunningServer) -> None:
    web = load("web")
    web.app.deploy()
    web.app.deploy("web2")
    key = cli_json("key", "create", "--app", "web2", env=server.env())["token"]
    other = httpx.post(
        f"{server.url}/web/square/",
        json={"x": 3},
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )
    assert other.status_code == 401
    assert "this key is for app 'web2', not 'web'" in other.json()["error"]["message"]
    assert api(server, "GET", "/api/v1/apps", token=key).status_code == 401
    own = httpx.post(
        f"{server.url}/web2/square/",
        json={"x": 3},
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )
    assert own.json() == {"square": 9}


def raw_deploy(
    server: RunningServer, files: dict[str, str] | None = None, **function: Any
) -> httpx.Response:
    """A deploy sent as raw JSON, as a client that skips the SDK's checks would."""
    request = {
        "app_name": "forger",
        "declared_name": "forger",
        "module": "forger_mod",
        "files": files or {"forger_mod.py": "import ember\napp = ember.App('forger')\n"},
        "functions": [{"name": "f", **function}],
    }
    return api(server, "POST", "/api/v1/apps", content=json.dumps(request))


def image(*steps: dict[str, Any], claimed: str | None = None) -> dict[str, Any]:
    return {
        "python_version": "3.11",
        "steps": list(steps),
        "hash": claimed or image_hash("3.11", list(steps)),
    }


def test_forged_and_escaping_deploys_change_nothing(server: RunningServer, tmp_path: Path) -> None:
    legit = ember.Image.debian_slim(python_version="3.11").env({"MODE": "legit"}).hash
    payload = base64.b64encode(b"planted").decode()
    outside_before = sorted(p.name for p in tmp_path.iterdir())
    cases = [
        (
            {"image": image({"kind": "env", "variables": {"MODE": "poisoned"}}, claimed=legit)},
            "does not match its steps",
        ),
        ({"image": image(claimed="../../hash_escape_dir")}, "does not match its steps"),
        (
            {
                "image": image(
                    {"kind": "files", "files": {"../../../../escaped_by_image_step.txt": payload}}
                )
            },
            "contains '..'",
        ),
        ({"image": image({"kind": "workdir", "path": "../../../../wd_escape"})}, "contains '..'"),
        ({"max_containers": -5, "timeout": -1}, "timeout must be positive"),
        ({"max_containers": -5}, "max_containers >= 1"),
        ({"retries": {"max_retries": 10**9}}, "retries must be between 0 and 10"),
        ({"name": ""}, "function name '' must be a Python identifier"),
        ({"name": "a/b"}, "function name 'a/b'"),
        ({"name": "../../x"}, "function name '../../x'"),
        ({"name": "x" * 10_000}, "(10000 characters) must be a Python identifier"),
    ]
    for function, message in cases:
        response = raw_deploy(server, **function)
        assert response.status_code == 400, (function, response.text)
        assert message in response.json()["error"]["message"], response.text
    escaping = raw_deploy(server, files={"../escape.py": "x = 1\n"})
    assert escaping.status_code == 400
    assert "source path '../escape.py'" in escaping.json()["error"]["message"]

    assert api(server, "GET", "/api/v1/apps").json() == []
    assert not (server.home / "images").exists() or not any((server.home / "images").iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == outside_before
    assert not (server.home / "apps").exists() or not any((server.home / "apps").iterdir())


def test_hostile_names_are_refused_with_400_never_500(server: RunningServer) -> None:
    tokens_before = api(server, "GET", "/api/v1/tokens").json()
    for name in ("\u0000", "a\nb", "../secret.key", "a;rm -rf /", "x" * 5000):
        response = api(
            server, "POST", "/api/v1/secrets", json={"name": name, "values": {"KEY": "value-12345"}}
        )
        assert response.status_code == 400, name
        assert "invalid secret name" in response.json()["error"]["message"]
    for name in ("x" * 300_000, "a\nb", "../t"):
        response = api(server, "POST", "/api/v1/tokens", json={"name": name})
        assert response.status_code == 400
        assert "invalid token name" in response.json()["error"]["message"]
    assert (
        api(server, "POST", "/api/v1/keys", json={"app": "hello", "name": "../k"}).status_code
        == 400
    )
    assert api(server, "POST", "/api/v1/volumes", json={"name": "../v"}).status_code == 400

    assert api(server, "POST", "/api/v1/volumes", json={"name": "v"}).status_code == 200
    long = "x" * 5000
    for method, path, body in [
        ("GET", f"/api/v1/volumes/v/entries?path={long}", None),
        ("GET", f"/api/v1/volumes/v/files?path={long}", None),
        ("DELETE", f"/api/v1/volumes/v/files?path={long}", None),
        ("POST", "/api/v1/volumes/v/uploads", {"paths": [long]}),
        ("GET", f"/api/v1/volumes/{long}", None),
        ("GET", f"/api/v1/images/{long}/logs", None),
        ("DELETE", f"/api/v1/secrets/{long}", None),
    ]:
        response = api(server, method, path, json=body)
        assert response.status_code == 400, (method, path[:60], response.text[:200])
    assert api(server, "GET", f"/api/v1/apps/{long}").status_code == 404
    assert api(server, "GET", "/api/v1/secrets").json() == []
    assert api(server, "GET", "/api/v1/tokens").json() == tokens_before


def test_secrets_are_never_stored_in_clear(server: RunningServer) -> None:
    env = server.env()
    created = ember_cli(
        "secret",
        "create",
        "leaky-creds",
        f"DB_PASSWORD={PASSWORD}",
        "PEM_KEY=" + "\n".join(PEM_LINES),
        "PIN=4242",
        env=env,
    )
    assert created.returncode == 0, created.stderr
    leaky = load("leaky")
    leaky.app.deploy()
    assert leaky.chatter.remote() == "chatted"
    with pytest.raises(RuntimeError, match=PASSWORD):  # the caller may see its own secret
        leaky.fail.spawn().get(timeout=60)
    assert leaky.reveal.spawn().get(timeout=60) == {"password": PASSWORD}

    logs = ember_cli("app", "logs", "leaky", env=env).stdout
    assert "pem is ****" in logs and "password=****" in logs and "pin **** for user" in logs
    for piece in [PASSWORD, PASSWORD[:9], PASSWORD[9:], *PEM_LINES[1:], "4242"]:
        assert piece not in logs
    # What an attacker who copies the data directory reads: no secret, in any file.
    for path in server.home.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert PASSWORD.encode() not in data, path
            assert PEM_LINES[1].encode() not in data, path

    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    home = server.home
    source = home / "apps" / "leaky" / "v1" / "leaky.py"
    assert mode(home) == mode(home / "apps") == 0o700
    for name in ("ember.db", "ember.db-wal", "ember.db-shm", "secret.key", "config.toml"):
        assert mode(home / name) == 0o600, name
    # Its replicas, run as ember-replica, read it through their group; on a Ray cluster they
    # read the copy sent to their node, and the server's stays its own.
    if os.geteuid() == 0 and server.cluster is None:
        assert source.stat().st_gid == grp.getgrnam("ember-replica").gr_gid
        assert (mode(source.parent), mode(source)) == (0o750, 0o640)
    else:
        assert (mode(source.parent), mode(source)) == (0o700, 0o600)


def test_docs_need_an_admin_token(server: RunningServer) -> None:
    assert httpx.get(f"{server.url}/openapi.json").status_code == 401
    assert httpx.get(f"{server.url}/docs").status_code == 401
    assert httpx.get(f"{server.url}/docs", params={"token": "ember-wrong"}).status_code == 401
    schema = api(server, "GET", "/openapi.json")
    assert schema.status_code == 200 and "/api/v1/apps" in schema.json()["paths"]
    page = httpx.get(f"{server.url}/docs", params={"token": server.token})
    assert page.status_code == 200
    assert page.headers["referrer-policy"] == "no-referrer"
    loaded = httpx.get(f"{server.url}/openapi.json", params={"token": server.token})
    assert loaded.json() == schema.json()  # what the docs page loads
