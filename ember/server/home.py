"""The server's data directory: private to its user (0700), with the files that hold secrets 0600.

The home holds the database (logs, call records, app versions), the key that decrypts secrets,
the client config (an admin token) and app sources. A home made by an older version, or by hand,
is tightened at start. The database file is created 0600 before SQLite opens it, because SQLite
gives its -wal and -shm files the mode of the database: that holds whatever the umask is, which
matters for the embedded server of `ember run`, which leaves the user's umask alone (`ember
server` sets 077 for everything it writes).
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.engine import make_url

PRIVATE_FILES = ("secret.key", "config.toml", "tls/key.pem")


def prepare_home(home: Path, db_url: str, apps_dir: Path) -> None:
    """Create `home` 0700 (or tighten it), and make its secret-holding files 0600."""
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    home.chmod(0o700)
    db = _sqlite_file(db_url)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.close(os.open(db, os.O_CREAT | os.O_WRONLY, 0o600))
    for path in [home / name for name in PRIVATE_FILES] + _sqlite_files(db):
        if path.exists():
            path.chmod(0o600)
    _tighten_tree(apps_dir)


def _sqlite_file(db_url: str) -> Path | None:
    url = make_url(db_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database)


def _sqlite_files(db: Path | None) -> list[Path]:
    if db is None:
        return []
    return [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]


def _tighten_tree(root: Path) -> None:
    """Folders 0700 and files 0600 under `root` (app sources may hold inline secrets)."""
    if not root.is_dir():
        return
    root.chmod(0o700)
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            os.chmod(os.path.join(folder, name), 0o700)
        for name in files:
            os.chmod(os.path.join(folder, name), 0o600)


def write_private(path: Path, data: bytes) -> None:
    """Write a new file that only its owner can read, from the first byte."""
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
