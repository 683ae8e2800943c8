"""ServerSettings: the one settings object of an `ember server` process, built by the CLI."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ember.backends.local import base_environment
from ember.server.metering.prices import PriceTable

# Set to 1, the server runs without metering and metrics (ServerSettings.metering): for
# benchmarks only, to measure what they cost side by side (BENCHMARKS.md).
NO_METERING_ENV = "EMBER_BENCH_NO_METERING"


@dataclass(frozen=True)
class ServerSettings:
    home: Path
    host: str = "127.0.0.1"
    port: int = 8765
    database_url: str | None = None  # default: sqlite file in `home`
    secret_key: str | None = None  # Fernet key for secrets at rest; default: $home/secret.key
    write_client_config: bool = True  # an embedded server for `ember run` leaves config alone
    default_max_containers: int = field(default_factory=lambda: max(2, 2 * (os.cpu_count() or 1)))
    replica_startup_timeout: float = 600.0
    replica_graceful_shutdown: float = 30.0
    health_interval: float = 5.0
    autoscale_interval: float = 0.5
    queue_wait_timeout: float = 600.0  # how long an input may wait for a replica slot
    shutdown_grace: int = 30  # seconds SIGTERM waits for work in flight before failing it
    # The gateway (web endpoints).
    domain: str | None = None  # host-based endpoint URLs: <app>--<function>.<domain>
    tls_cert: Path | None = None
    tls_key: Path | None = None
    max_request_body: int = 32 * 1024 * 1024
    max_buffered_bytes: int = 256 * 1024 * 1024  # all request bodies held at once; then 503
    client_timeout: float = 60.0  # a client silent this long while sending or reading is dropped
    max_queued_requests: int = 256  # per function; beyond it, 503 + Retry-After
    gateway_wait_timeout: float = 600.0  # a request waits this long for a replica, then 503
    # Replicas.
    gpus: str | None = None  # --gpus: none, indices ("0,1"), or declared ("H100:4"); None: found
    gpu_fallback_cpu: bool = False  # run functions whose GPU this host lacks on the CPU
    sandbox: bool = True  # network and PID namespaces per replica, where the host allows
    # Where replicas run: "local" (processes on this host) or "ray" (actors on a Ray cluster).
    backend: str = "local"
    ray_address: str | None = None  # the cluster's HOST:PORT; None: `ray start` here, RAY_ADDRESS
    ray_node_dir: str = "/tmp/ember-node"  # on each Ray node: sources, images, volume copies
    advertise_url: str | None = None  # the server as replicas on other machines reach it
    # Volumes in a folder every node mounts (the shared driver); None: $EMBER_HOME/volumes.
    volumes_path: Path | None = None
    # Parked replicas (gpu_snapshot=True): how long and how many are kept, and how much of the
    # host's memory they may hold together; past any of these the oldest stops.
    park_for: float = 3600.0
    max_parked: int = 16
    parked_memory_fraction: float = 0.5
    park_hook_timeout: float = 120.0  # seconds for @before_park / @after_restore hooks
    # Observability: metrics, metering, budgets, logs.
    metrics_public: bool = False  # /metrics without a token
    metrics_interval: float = 5.0  # how often replicas are asked for their own metrics
    prices: PriceTable = field(default_factory=PriceTable)
    meter_interval: float = 2.0  # usage checkpoints and budget checks
    budget_webhook: str | None = None  # alerts (80 %, 100 % of a budget) are POSTed here
    log_retention_bytes: int = 64 * 1024 * 1024  # per app; the oldest lines go first
    call_retention_days: float = 7.0  # a finished call's record, input and output, then gone
    # False: no meter, usage, budgets, per-request metrics or replica metrics (NO_METERING_ENV).
    metering: bool = True
    # What replicas inherit of the server's environment (ember/backends/local.py: BASE_ENV).
    replica_base_env: dict[str, str] = field(default_factory=lambda: base_environment(os.environ))

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        host = "localhost" if self.tls and self.host == "127.0.0.1" else self.host
        return f"{scheme}://{host}:{self.port}"

    @property
    def replica_server_url(self) -> str:
        """The server as replicas reach it: `advertise_url` if given (replicas on other
        machines); else on their loopback (a sandbox forwards the port), unless the server
        listens on one address only."""
        if self.advertise_url:
            return self.advertise_url.rstrip("/")
        scheme = "https" if self.tls else "http"
        host = self.host
        if host in ("127.0.0.1", "0.0.0.0", "::", "localhost"):
            host = "localhost" if self.tls else "127.0.0.1"
        return f"{scheme}://{host}:{self.port}"

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'ember.db'}"

    @property
    def apps_dir(self) -> Path:
        return self.home / "apps"

    @property
    def volumes_dir(self) -> Path:
        return self.volumes_path or self.home / "volumes"

    @property
    def volume_storage(self) -> str:
        """The volume driver (runtime/volume_storage.py): "shared" with --volumes-path."""
        return "shared" if self.volumes_path else "local"
