"""`ember llm serve` with no server running (what `./scripts/serve` runs): the same URL and key at
every start, and the rest of the CLI reaches its embedded server from other terminals."""

from __future__ import annotations

import signal
import socket
import subprocess
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.integration.helpers import cli_json, ember_cli
from tests.integration.llm.test_llm_serve import QUESTION, start_llm_serve

pytestmark = pytest.mark.llm


def ctrl_c(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 0
    assert process.stdout is not None
    process.stdout.close()


def test_restarts_keep_the_url_and_the_key_and_other_terminals_see_the_server(
    model_dir: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    # Another terminal knows only the data directory.
    terminal = {"EMBER_HOME": str(home), "EMBER_SERVER_URL": "", "EMBER_TOKEN": ""}
    port = free_port()  # not 8765, which other test runs on this machine may hold
    first, endpoint = start_llm_serve(home, str(model_dir), "--port", str(port))
    try:
        assert endpoint.base_url == f"http://127.0.0.1:{port}/llm/Server/v1"
        reply = endpoint.client().chat.completions.create(
            model=endpoint.model,
            messages=QUESTION,
            max_tokens=4,  # type: ignore[arg-type]
        )
        assert reply.choices[0].message.content
        (server_function,) = cli_json("app", "show", "llm", env=terminal)["functions"]
        assert sum(server_function["replicas"].values()) == 1
        logs = ember_cli("app", "logs", "llm", env=terminal)
        assert logs.returncode == 0 and "starting" in logs.stdout, logs.stderr
        assert cli_json("key", "create", "--app", "llm", env=terminal)["token"]
    finally:
        ctrl_c(first)
    key_file = home / "endpoint-keys" / "llm.json"
    assert key_file.stat().st_mode & 0o077 == 0

    second, again = start_llm_serve(home, str(model_dir))  # no --port: the config's URL
    try:
        assert again == endpoint
        (kept,) = [
            k for k in cli_json("key", "list", "--app", "llm", env=terminal)
            if k["name"] == "ember-llm-serve"
        ]  # fmt: skip
        assert ember_cli("key", "revoke", kept["id"], env=terminal).returncode == 0
    finally:
        ctrl_c(second)

    third, renewed = start_llm_serve(home, str(model_dir))
    try:
        assert renewed.base_url == endpoint.base_url
        assert renewed.api_key != endpoint.api_key  # the kept key was revoked: a new one
    finally:
        ctrl_c(third)

    fourth, rotated = start_llm_serve(home, str(model_dir), "--new-key")
    try:
        assert rotated.api_key != renewed.api_key
        keys = cli_json("key", "list", "--app", "llm", env=terminal)
        live = [k for k in keys if k["name"] == "ember-llm-serve" and not k["revoked"]]
        assert len(live) == 1  # --new-key revoked the one it replaced
    finally:
        ctrl_c(fourth)


def test_a_port_in_use_is_named_with_the_flag_to_change_it(model_dir: Path, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = ember_cli(
            "llm", "serve", str(model_dir), "--port", str(port),
            env={"EMBER_HOME": str(tmp_path / "home")},
        )  # fmt: skip
    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 is in use by another program" in result.stderr
    assert "--port PORT" in result.stderr
    assert "Traceback" not in result.stderr
