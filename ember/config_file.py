"""The client config file, `$EMBER_HOME/config.toml`: written by the server, read by the SDK/CLI."""

from __future__ import annotations

import tomllib
from pathlib import Path


def read_config_file(home: Path) -> dict[str, str]:
    path = home / "config.toml"
    if not path.exists():
        return {}
    with path.open("rb") as f:
        return {key: str(value) for key, value in tomllib.load(f).items()}


def write_client_config(
    home: Path, server_url: str, token: str, ca_cert: Path | None = None
) -> None:
    """Write atomically, readable only by its owner (it holds a token)."""
    home.mkdir(parents=True, exist_ok=True)
    target = home / "config.toml"
    tmp = target.with_suffix(".toml.tmp")
    text = f'server_url = "{server_url}"\ntoken = "{token}"\n'
    if ca_cert is not None:
        text += f'ca_cert = "{ca_cert}"\n'
    tmp.write_text(text)
    tmp.chmod(0o600)
    tmp.replace(target)
