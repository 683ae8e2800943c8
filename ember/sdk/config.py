"""ClientSettings: where the SDK and CLI find the control plane.

Priority, highest first: the environment (`EMBER_SERVER_URL`, `EMBER_TOKEN`, `EMBER_HOME`), then
`$EMBER_HOME/config.toml` (written by `ember server` on start), then nothing (no server configured).
`EMBER_HOME` defaults to `~/.ember`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ember import wire
from ember.config_file import read_config_file


def in_replica() -> bool:
    """True inside a replica process, where the user's module is imported a second time."""
    return wire.REPLICA_ID_ENV in os.environ


def ember_home(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    return Path(env.get("EMBER_HOME") or Path.home() / ".ember").expanduser()


@dataclass(frozen=True)
class ClientSettings:
    server_url: str | None
    token: str | None
    home: Path
    ca_cert: str | None = None  # a PEM file to verify the server's certificate with

    @property
    def configured(self) -> bool:
        return self.server_url is not None

    @classmethod
    def load(cls, environ: dict[str, str] | None = None) -> ClientSettings:
        env = dict(os.environ if environ is None else environ)
        home = ember_home(env)
        url, token = env.get("EMBER_SERVER_URL"), env.get("EMBER_TOKEN")
        file_values = {} if url and token else read_config_file(home)
        return cls(
            server_url=url or file_values.get("server_url"),
            token=token or file_values.get("token"),
            ca_cert=env.get("EMBER_CA_CERT") or file_values.get("ca_cert"),
            home=home,
        )
