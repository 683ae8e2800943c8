"""ServerSettings: the one settings object of an `ember server` process, built by the CLI."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ServerSettings:
    home: Path
    host: str = "127.0.0.1"
    port: int = 8765
    database_url: str | None = None  # default: sqlite file in `home`
    write_client_config: bool = True  # an embedded server for `ember run` leaves config alone
    default_max_containers: int = field(default_factory=lambda: max(2, 2 * (os.cpu_count() or 1)))
    replica_startup_timeout: float = 600.0
    replica_graceful_shutdown: float = 30.0
    health_interval: float = 5.0
    autoscale_interval: float = 0.5
    queue_wait_timeout: float = 600.0  # how long an input may wait for a replica slot

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'ember.db'}"

    @property
    def apps_dir(self) -> Path:
        return self.home / "apps"
