"""schemathesis against the control plane's own OpenAPI: no server error, and every answer one the
schema documents (status code, content type, body), with an admin token.

The server is the test's own: the stateful phase may stop apps, delete volumes and revoke keys,
as an admin may. The run is deterministic (fixed seed, one worker, no example database) and
bounded by the number of examples per operation, about 15 s on a 2-core machine.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx

from tests.conftest import RunningServer
from tests.integration.helpers import cli_json, ember_cli, load

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "response_headers_conformance",
        "ignored_auth",
        "use_after_free",
        "ensure_resource_availability",
    ]
)
EXAMPLES = 50


def seed_data(server: RunningServer, tmp_path: Path) -> dict[str, list[str]]:
    """Real names and ids for the generator to use alongside random ones, so requests reach
    existing resources, not only 404s."""
    env = server.env()
    hello = load("hello")
    hello.app.deploy()
    call = hello.square.spawn(3)
    assert call.get(timeout=60) == 9
    data = tmp_path / "f.txt"
    data.write_text("contents")
    for command in (
        ("volume", "create", "data"),
        ("volume", "put", "data", str(data), "/f.txt"),
        ("secret", "create", "creds", "PASSWORD=abcdefgh12345"),
    ):
        assert ember_cli(*command, env=env).returncode == 0
    key = cli_json("key", "create", "--app", "hello", env=env)["id"]
    spare = cli_json("token", "new", "--name", "spare", env=env)["id"]  # not the run's own
    return {
        "names": ["hello", "data", "creds", "f.txt", "/f.txt"],
        "ids": [call.object_id, key, spare],
    }


def config(values: dict[str, list[str]]) -> str:
    lines = []
    for dictionary, entries in values.items():
        quoted = ", ".join(f'"{entry}"' for entry in entries)
        lines += [f"[dictionaries.{dictionary}]", f"values = [{quoted}]"]
    lines.append("[parameters]")
    for parameter, dictionary in [
        ("path.name", "names"),
        ("query.path", "names"),
        ("path.call_id", "ids"),
        ("path.key_id", "ids"),
        ("path.token_id", "ids"),
    ]:
        lines.append(f'"{parameter}" = {{ dictionary = "{dictionary}", probability = 0.5 }}')
    return "\n".join(lines) + "\n"


def test_the_api_answers_only_what_its_schema_documents(
    server: RunningServer, tmp_path: Path
) -> None:
    (tmp_path / "schemathesis.toml").write_text(config(seed_data(server, tmp_path)))
    schema = httpx.get(
        f"{server.url}/openapi.json", headers={"Authorization": f"Bearer {server.token}"}
    )
    (tmp_path / "openapi.json").write_text(schema.text)
    run = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "--config-file",
            str(tmp_path / "schemathesis.toml"),
            "run",
            str(tmp_path / "openapi.json"),
            "--url",
            server.url,
            "-H",
            f"Authorization: Bearer {server.token}",
            "--checks",
            CHECKS,
            "--max-examples",
            str(EXAMPLES),
            "--seed",
            "1",
            "--workers",
            "1",
            "--generation-database",
            "none",
            "--request-timeout",
            "30",
            "--no-color",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stdout[-20_000:] + run.stderr[-2_000:]
    assert "Traceback" not in server.log_path.read_text()
