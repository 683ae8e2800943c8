"""The client config file, `$EMBER_HOME/config.toml`: written by the server, read by the SDK/CLI."""

from __future__ import annotations

import json
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
    values = {"server_url": server_url, "token": token}
    if ca_cert is not None:
        values["ca_cert"] = str(ca_cert)
    text = "".join(f"{key} = {toml_string(value)}\n" for key, value in values.items())
    write_private(home / "config.toml", text)


def write_private(target: Path, text: str) -> None:
    """Replace `target` atomically with `text`, readable only by its owner from the start."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.touch(mode=0o600)
    tmp.chmod(0o600)  # in case it was left behind with other permissions
    tmp.write_text(text)
    tmp.replace(target)


def toml_string(value: str) -> str:
    """`value` as a TOML basic string. JSON's escapes are TOML's, except that TOML also wants DEL
    escaped and has no surrogate pairs (ensure_ascii=False keeps other characters as they are)."""
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
