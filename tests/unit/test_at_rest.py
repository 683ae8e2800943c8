"""What the server keeps on disk: a private home, encrypted call blobs, replica tokens per app."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

from cryptography.fernet import Fernet

from ember.server.home import prepare_home
from ember.server.secrets import SecretBox
from ember.server.store.async_store import AsyncStore
from ember.server.store.base import CallRecord
from ember.server.store.sql import SqlStore
from ember.server.tokens import ReplicaTokens

PASSWORD = b"hunter2-very-secret"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_an_old_loose_home_is_tightened(tmp_path: Path) -> None:
    home = tmp_path / "home"
    source = home / "apps" / "sec" / "v1" / "sec.py"
    source.parent.mkdir(parents=True)
    for path in (source, home / "ember.db", home / "ember.db-wal", home / "secret.key"):
        path.write_text("")
        path.chmod(0o644)
    for folder in (home, home / "apps", source.parent):
        folder.chmod(0o755)
    prepare_home(home, f"sqlite:///{home / 'ember.db'}", home / "apps")
    assert mode(home) == mode(home / "apps") == mode(source.parent) == 0o700
    for path in (source, home / "ember.db", home / "ember.db-wal", home / "secret.key"):
        assert mode(path) == 0o600, path


def test_a_new_database_and_its_wal_are_private_whatever_the_umask(tmp_path: Path) -> None:
    home = tmp_path / "home"
    url = f"sqlite:///{home / 'ember.db'}"
    prepare_home(home, url, home / "apps")  # the test process keeps its usual umask (022)
    store = SqlStore(url)
    store.create_token("t", kind="admin")
    assert {p.name: mode(p) for p in home.iterdir()} == {
        "ember.db": 0o600,
        "ember.db-wal": 0o600,
        "ember.db-shm": 0o600,
    }
    store.close()


def test_call_blobs_are_encrypted_in_the_store(tmp_path: Path) -> None:
    db = tmp_path / "ember.db"
    store = SqlStore(f"sqlite:///{db}", blobs=SecretBox(Fernet.generate_key()))
    call = CallRecord(
        id="fc-1", app="a", function="f", method=None, kind="spawn", status="pending",
        created_at=0.0, payload=b"\x80args " + PASSWORD,
    )  # fmt: skip
    store.insert_calls([call])
    store.update_call("fc-1", status="failed", result=b"\x01RuntimeError " + PASSWORD)
    stored_call = store.get_call("fc-1")
    assert stored_call is not None and stored_call.result == b"\x01RuntimeError " + PASSWORD
    assert stored_call.payload == b"\x80args " + PASSWORD
    assert store.unfinished_spawns() == []
    store.close()
    with sqlite3.connect(db) as conn:  # as an attacker who can read the file would
        stored = conn.execute("SELECT payload, result FROM calls").fetchone()
    assert all(PASSWORD not in blob for blob in stored)
    for path in tmp_path.iterdir():
        assert PASSWORD not in path.read_bytes(), path


def test_blobs_stored_before_encryption_still_read(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ember.db'}"
    old = CallRecord(
        id="fc-old", app="a", function="f", method=None, kind="spawn", status="succeeded",
        created_at=0.0, result=b"\x00plain",
    )  # fmt: skip
    SqlStore(url).insert_calls([old])
    store = SqlStore(url, blobs=SecretBox(Fernet.generate_key()))
    call = store.get_call("fc-old")
    assert call is not None and call.result == b"\x00plain"


async def test_one_replica_token_per_app_revoked_with_the_app(tmp_path: Path) -> None:
    store = SqlStore(f"sqlite:///{tmp_path / 'ember.db'}")
    tokens = ReplicaTokens(AsyncStore(store), "http://127.0.0.1:8765")
    other_server = await ReplicaTokens(AsyncStore(store), "http://10.0.0.2:8765").for_app("a")
    a, b = await tokens.for_app("a"), await tokens.for_app("b")
    assert await tokens.for_app("a") == a != b
    record = store.verify_token(a)
    assert record is not None and (record.kind, record.app) == ("replica", "a")
    await tokens.revoke("a")
    assert store.verify_token(a) is None and store.verify_token(b) is not None
    assert await tokens.for_app("a") != a  # a redeploy gets a new one
    # A server that crashed left `b`'s token live; the next one revokes it before anything.
    await ReplicaTokens(AsyncStore(store), "http://127.0.0.1:8765").revoke_all()
    assert store.verify_token(b) is None
    # ...and leaves alone those of another server on the same database.
    assert store.verify_token(other_server) is not None
