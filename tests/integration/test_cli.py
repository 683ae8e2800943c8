"""The `ember` CLI against a real server, as a user runs it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from tests.conftest import wait_until
from tests.integration.helpers import APPS, cli_json, ember_cli


def test_run_local_entrypoint_with_args(server) -> None:  # type: ignore[no-untyped-def]
    result = ember_cli("run", str(APPS / "hello.py"), "--n", "4", env=server.env())
    assert result.returncode == 0, result.stderr
    assert "squares [0, 1, 4, 9]" in result.stdout
    assert "squaring 3" in result.stderr  # replica logs stream to the terminal
    apps = cli_json("app", "list", env=server.env())
    assert apps == []  # the ephemeral app is gone after the run


def test_run_named_function(server) -> None:  # type: ignore[no-untyped-def]
    result = ember_cli("run", f"{APPS / 'hello.py'}::square", "--x", "6", env=server.env())
    assert result.returncode == 0, result.stderr
    assert "36" in result.stdout


def test_run_without_a_server_starts_an_embedded_one(tmp_path: Path) -> None:
    env = {"EMBER_HOME": str(tmp_path / "fresh-home"), "EMBER_SERVER_URL": "", "EMBER_TOKEN": ""}
    result = ember_cli("run", str(APPS / "modal_compat.py"), env=env)
    assert result.returncode == 0, result.stderr
    assert "add 5" in result.stdout
    assert "map 90" in result.stdout
    assert "greet Bonjour, Ada!" in result.stdout
    assert "spawn 42" in result.stdout


def test_deploy_list_show_logs_stop(server) -> None:  # type: ignore[no-untyped-def]
    env = server.env()
    result = ember_cli("deploy", str(APPS / "hello.py"), env=env)
    assert result.returncode == 0, result.stderr
    assert "Deployed hello version 1" in result.stdout
    ran = ember_cli("run", f"{APPS / 'hello.py'}::square", "--x", "3", env=env)
    assert ran.returncode == 0, ran.stderr

    # `ember run` ran its own ephemeral copy; call the deployed one by name.
    caller = subprocess.run(
        [
            sys.executable,
            "-c",
            "import ember; print("
            "ember.Function.from_name('hello', 'square').remote(11), "
            "ember.Function.from_name('hello', 'replica').remote())",
        ],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert caller.stdout.split()[0] == "121", caller.stderr

    apps = cli_json("app", "list", env=env)
    assert [a["name"] for a in apps] == ["hello"]
    shown = cli_json("app", "show", "hello", env=env)
    replica = next(f for f in shown["functions"] if f["name"] == "replica")
    assert replica["replicas"] == {"ready": 1}  # square's 1 s scaledown_window may have passed
    logs = ember_cli("app", "logs", "hello", env=env)
    assert "squaring 11" in logs.stdout

    with subprocess.Popen(
        [sys.executable, "-m", "ember.cli.main", "app", "logs", "-f", "hello"],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        text=True,
    ) as follow:
        subprocess.run(
            [
                sys.executable,
                "-c",
                "import ember; ember.Function.from_name('hello', 'square').remote(12)",
            ],
            env={**os.environ, **env},
            timeout=60,
            check=True,
        )
        assert follow.stdout is not None
        wait_until(lambda: "squaring 12" in follow.stdout.readline(), timeout=30, interval=0)
        follow.send_signal(signal.SIGINT)

    stopped = ember_cli("app", "stop", "hello", env=env)
    assert stopped.returncode == 0, stopped.stderr
    assert cli_json("app", "show", "hello", env=env)["state"] == "stopped"
    wait_until(lambda: not server.replica_pids(), timeout=30)


def test_deploy_of_a_file_that_does_not_import(server) -> None:  # type: ignore[no-untyped-def]
    result = ember_cli("deploy", str(APPS / "broken_import.py"), env=server.env())
    assert result.returncode == 1
    assert "does not import" in result.stderr
    assert "this module fails at import time" in result.stderr
    assert cli_json("app", "list", env=server.env()) == []


def test_unknown_app_and_bad_ref(server) -> None:  # type: ignore[no-untyped-def]
    shown = ember_cli("app", "show", "nope", env=server.env())
    assert shown.returncode == 1
    assert "NotFoundError: app 'nope' not found" in shown.stderr
    missing = ember_cli("deploy", "no_such_file.py", env=server.env())
    assert missing.returncode == 2
    assert "No such file" in missing.stderr
    wrong = ember_cli("run", f"{APPS / 'hello.py'}::nope", env=server.env())
    assert wrong.returncode != 0
    assert "'nope' is not a function or local entrypoint" in wrong.stderr


def test_tokens_and_auth(server) -> None:  # type: ignore[no-untyped-def]
    env = server.env()
    created = cli_json("token", "new", "--name", "ci", env=env)
    token = created["token"]
    response = httpx.get(server.url + "/api/v1/apps", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    listed = cli_json("token", "list", env=env)
    assert {"admin", "ci"} <= {t["name"] for t in listed}
    assert all("token" not in t for t in listed)  # only ever shown once

    revoked = ember_cli("token", "revoke", created["id"], env=env)
    assert revoked.returncode == 0, revoked.stderr
    response = httpx.get(server.url + "/api/v1/apps", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "invalid or revoked token"

    no_token = httpx.get(server.url + "/api/v1/apps")
    assert no_token.status_code == 401
    assert "missing token" in no_token.json()["error"]["message"]
    wrong = ember_cli("app", "list", env={**env, "EMBER_TOKEN": "ember-wrong"})
    assert wrong.returncode == 1
    assert "AuthError: invalid or revoked token" in wrong.stderr


def test_first_start_writes_client_config(server) -> None:  # type: ignore[no-untyped-def]
    config = (server.home / "config.toml").read_text()
    assert f'server_url = "{server.url}"' in config
    assert (server.home / "config.toml").stat().st_mode & 0o077 == 0
    # With only EMBER_HOME set, the CLI finds the server and token by itself.
    result = ember_cli(
        "app",
        "list",
        "--json",
        env={"EMBER_HOME": str(server.home), "EMBER_SERVER_URL": "", "EMBER_TOKEN": ""},
    )
    assert result.returncode == 0, result.stderr


def test_serve_redeploys_on_change(server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    source = tmp_path / "live.py"
    source.write_text(
        "import ember\napp = ember.App('live')\n@app.function()\ndef hi():\n    return 'one'\n"
    )
    env = server.env()
    with subprocess.Popen(
        [sys.executable, "-m", "ember.cli.main", "serve", str(source), "--interval", "0.2"],
        env={**os.environ, **env},
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    ) as serving:
        try:
            assert serving.stdout is not None
            # It says so once it has deployed and noted the file's time: a change now is seen.
            while not serving.stdout.readline().startswith("Watching"):
                assert serving.poll() is None, "ember serve exited"
            source.write_text(source.read_text().replace("'one'", "'two'"))
            wait_until(lambda: cli_json("app", "show", "live", env=env)["version"] == 2, timeout=60)
        finally:
            serving.send_signal(signal.SIGINT)
            serving.communicate(timeout=60)  # reads what it prints while stopping
    assert serving.returncode == 0
    assert cli_json("app", "show", "live", env=env)["state"] == "stopped"


def test_invalid_app_names_are_refused(server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    source = tmp_path / "named.py"
    for name, message in (
        ("api", "reserved for the server's own paths"),
        ("dashboard", "reserved for the server's own paths"),
        ("my--app", "without '--'"),
        ("sp ace", "invalid app name"),
    ):
        source.write_text(
            f"import ember\napp = ember.App({name!r})\n@app.function()\ndef f():\n    return 1\n"
        )
        result = ember_cli("deploy", str(source), env=server.env())
        assert result.returncode == 1
        assert message in result.stderr, result.stderr
    assert cli_json("app", "list", env=server.env()) == []


def test_a_port_in_use_gets_a_message_naming_it_and_the_flag(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = ember_cli(
            "server", "--port", str(port), env={"EMBER_HOME": str(tmp_path / "home")}, timeout=60
        )
    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 is in use by another program" in result.stderr
    assert "--port PORT" in result.stderr
    assert "Traceback" not in result.stderr
