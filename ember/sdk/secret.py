"""Secrets: named sets of environment variables, encrypted at rest, injected into replicas."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ember.sdk.exceptions import InvalidError


class Secret:
    """A reference to a secret stored on the server, or values to store when the app deploys.

    Example:
        ember.Secret.from_name("openai")            # made with `ember secret create openai K=V`
        ember.Secret.from_dict({"MODE": "prod"})    # stored (encrypted) on deploy
    """

    def __init__(self, name: str, values: dict[str, str] | None = None) -> None:
        self.name, self.values = name, values

    def __repr__(self) -> str:
        return f"<ember.Secret {self.name}>"  # never the values

    @classmethod
    def from_name(cls, name: str) -> Secret:
        return cls(name)

    @classmethod
    def from_dict(cls, values: dict[str, str]) -> Secret:
        values = _checked(values)
        digest = hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]
        return cls(f"inline-{digest}", values)

    @classmethod
    def from_dotenv(cls, path: str | Path = ".env") -> Secret:
        file = Path(path)
        if file.is_dir():
            file = file / ".env"
        if not file.exists():
            raise InvalidError(f"no dotenv file at {file}")
        return cls.from_dict(parse_dotenv(file.read_text()))


def parse_dotenv(text: str) -> dict[str, str]:
    """KEY=VALUE lines; blank lines, comments and `export ` prefixes allowed; quotes stripped."""
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.removeprefix("export ").partition("=")
        if not sep or not key.strip():
            raise InvalidError(f"dotenv line {number} is not KEY=VALUE: {raw!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def _checked(values: dict[str, str]) -> dict[str, str]:
    for key, value in values.items():
        if not key.isidentifier() or not isinstance(value, str):
            raise InvalidError(f"secret keys must be names and values strings; got {key!r}")
    return dict(values)
