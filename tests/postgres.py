"""A throwaway PostgreSQL cluster from Debian's packages, for the store's tests on PostgreSQL.

`initdb` + `pg_ctl` in a temporary folder, on a free loopback port, as the `postgres` user
(PostgreSQL refuses to run as root, and the tests do). Each test gets a fresh database in it.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

BINARIES = ("initdb", "pg_ctl")
USER = "postgres"


def postgres_bin() -> Path | None:
    """Debian's server binaries (/usr/lib/postgresql/<version>/bin), newest first, or on PATH."""
    for bindir in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if all(Path(bindir, name).exists() for name in BINARIES):
            return Path(bindir)
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PostgresCluster:
    def __init__(self, bindir: Path, port: int) -> None:
        self.bindir, self.port = bindir, port
        self.root = Path(tempfile.mkdtemp(prefix="ember-pg-"))
        self.data = self.root / "data"

    def _run(self, *args: str) -> None:
        command = [str(self.bindir / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", USER, "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def create(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.root, USER)
        self._run("initdb", "-D", str(self.data), "-U", USER, "--auth=trust", "-E", "UTF8")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-w", "-l",
                  str(self.root / "log"), "start")  # fmt: skip

    def stop(self) -> None:
        """Stop the server, keeping its data (start() brings it back)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = USER) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database; returns its URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        engine = sa.create_engine(self.url().replace("postgresql:", "postgresql+psycopg:"))
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
        return self.url(name)


def skip_without_postgres() -> Path:
    bindir = postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL's server is not installed (apt-get install postgresql)")
    return bindir
