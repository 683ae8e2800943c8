"""Secrets: encrypted at rest, injected into replicas, never shown back."""

from __future__ import annotations

import json
import sqlite3

import httpx

from tests.integration.helpers import APPS, cli_json, ember_cli, load

PASSWORD = "hunter2-very-secret"


def test_secret_injection_and_redaction(server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = server.env()
    dotenv = tmp_path / ".env"
    dotenv.write_text(f"# credentials\nexport DB_USER=alice\nDB_PASSWORD='{PASSWORD}'\n")
    created = ember_cli("secret", "create", "db-creds", "--from-dotenv", str(dotenv), env=env)
    assert created.returncode == 0, created.stderr
    assert PASSWORD not in created.stdout

    module = load("secretive")
    # A function that names a secret that does not exist fails the whole deploy, clearly.
    failed = ember_cli("deploy", str(APPS / "secretive.py"), env=env)
    assert failed.returncode == 1
    assert "secret 'missing-secret', which does not exist" in failed.stderr
    assert "ember secret create missing-secret" in failed.stderr
    assert cli_json("app", "list", env=env) == []

    ember_cli("secret", "create", "missing-secret", "X=1", env=env)
    module.app.deploy()
    assert module.read_env.remote() == {
        "user": "alice",
        "mode": "inline-mode-value",
        "password_length": len(PASSWORD),
    }

    logs = ember_cli("app", "logs", "secretive", env=env).stdout
    assert "connecting with password ****" in logs
    listed = cli_json("secret", "list", env=env)
    assert {"name": "db-creds", "keys": ["DB_PASSWORD", "DB_USER"]}.items() <= next(
        s for s in listed if s["name"] == "db-creds"
    ).items()
    shown = ember_cli("app", "show", "secretive", "--json", env=env).stdout
    api = httpx.get(
        f"{server.url}/api/v1/apps/secretive", headers={"Authorization": f"Bearer {server.token}"}
    ).text
    with sqlite3.connect(server.home / "ember.db") as db:
        dump = "\n".join(
            str(row)
            for table in ("secrets", "app_versions", "logs")
            for row in db.execute(f"SELECT * FROM {table}")
        )
    for text in (logs, json.dumps(listed), shown, api, dump):
        assert PASSWORD not in text
    for text in (json.dumps(listed), shown, api):  # (the app's source, stored, has its literal)
        assert "inline-mode-value" not in text

    duplicate = ember_cli("secret", "create", "db-creds", "A=1", env=env)
    assert duplicate.returncode == 1
    assert "pass --force" in duplicate.stderr
    assert ember_cli("secret", "delete", "db-creds", env=env).returncode == 0
    assert "db-creds" not in {s["name"] for s in cli_json("secret", "list", env=env)}
