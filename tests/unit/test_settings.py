"""ClientSettings precedence: environment, then config.toml, then nothing."""

from __future__ import annotations

from pathlib import Path

from ember.config_file import write_client_config
from ember.sdk.config import ClientSettings


def test_environment_beats_config_file(tmp_path: Path) -> None:
    write_client_config(tmp_path, "http://127.0.0.1:1", "from-file")
    env = {"EMBER_HOME": str(tmp_path)}
    assert ClientSettings.load(env).token == "from-file"
    assert ClientSettings.load(env).server_url == "http://127.0.0.1:1"
    env["EMBER_TOKEN"] = "from-env"
    assert ClientSettings.load(env).token == "from-env"


def test_nothing_configured(tmp_path: Path) -> None:
    settings = ClientSettings.load({"EMBER_HOME": str(tmp_path / "empty")})
    assert not settings.configured
