"""Secrets at rest: Fernet-encrypted in the store, with the key outside it.

The key comes from EMBER_SECRET_KEY (read by the CLI into ServerSettings) or, failing that, from
`$EMBER_HOME/secret.key`, created on first use and readable only by its owner. The same box
encrypts what spawned calls keep in the store (their inputs, results and exceptions), since user
code may put a secret in any of them and the server never looks inside.
"""

from __future__ import annotations

import json
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from ember.server.errors import ApiError
from ember.server.home import write_private

# Every Fernet token starts so (version byte, then a 64-bit time below 2**32); the frames and
# pickles that calls stored in the clear start with a byte below 0x03 or 0x80.
FERNET_PREFIX = b"gAAAAA"


def load_key(home: Path, configured: str | None) -> bytes:
    if configured:
        return configured.encode()
    path = home / "secret.key"
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)  # left by a start that died between the two steps
        write_private(tmp, Fernet.generate_key())
        tmp.replace(path)
    return path.read_bytes().strip()


class SecretBox:
    def __init__(self, key: bytes) -> None:
        try:
            self._fernet = Fernet(key)
        except ValueError as exc:
            raise ValueError(
                "EMBER_SECRET_KEY is not a valid Fernet key (32 url-safe base64 "
                "bytes; make one with `python -c 'from cryptography.fernet import "
                "Fernet; print(Fernet.generate_key().decode())'`)"
            ) from exc

    def seal_bytes(self, data: bytes) -> bytes:
        return self._fernet.encrypt(data)

    def open_bytes(self, data: bytes) -> bytes:
        """`data` decrypted; a blob stored before blobs were encrypted comes back as it was."""
        if not data.startswith(FERNET_PREFIX):
            return data
        try:
            return self._fernet.decrypt(data)
        except InvalidToken:
            raise ApiError(
                500,
                "ServerError",
                "stored call data cannot be decrypted with this server's key "
                "(was EMBER_SECRET_KEY changed?)",
            ) from None

    def seal(self, values: dict[str, str]) -> bytes:
        return self._fernet.encrypt(json.dumps(values).encode())

    def open(self, sealed: bytes, name: str) -> dict[str, str]:
        try:
            return dict(json.loads(self._fernet.decrypt(sealed)))
        except InvalidToken:
            raise ApiError(
                500,
                "ServerError",
                f"secret {name!r} cannot be decrypted with this "
                "server's key (was EMBER_SECRET_KEY changed?)",
            ) from None
