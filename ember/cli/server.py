"""`ember server`, and the embedded server that `ember run` and `ember llm serve` start when none
answers."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import typer
import uvicorn
from rich.markup import escape

from ember.backends.base import Capabilities
from ember.backends.gpus import GpuFlagError
from ember.backends.ray import RayUnavailable
from ember.cli.output import console, err
from ember.sdk.config import ClientSettings, ember_home
from ember.server.app import create_app
from ember.server.gateway.app import Gateway
from ember.server.metering.prices import PriceError, PriceTable
from ember.server.replicas.placement import describe_gpus
from ember.server.settings import NO_METERING_ENV, ServerSettings
from ember.server.shutdown import BoundedServer, InFlight
from ember.server.store.database import StoreUnavailable
from ember.server.store.sql import SqlStore
from ember.server.tls import self_signed

DEFAULT_PORT = 8765
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def server(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(DEFAULT_PORT, help="Port to listen on."),
    home: Path = typer.Option(None, help="Data directory (default: $EMBER_HOME or ~/.ember)."),
    database_url: str = typer.Option(
        None,
        envvar="EMBER_DATABASE_URL",
        help="postgresql://user:password@host/db, or any SQLAlchemy URL (default: SQLite in the "
        "home). Servers on one PostgreSQL database serve the same apps.",
    ),
    domain: str = typer.Option(None, help="Serve endpoints at <app>--<function>.<domain> too."),
    tls_cert: Path = typer.Option(None, help="PEM certificate: serve HTTPS."),
    tls_key: Path = typer.Option(None, help="PEM private key of --tls-cert."),
    max_queued_requests: int = typer.Option(
        256, help="Requests that may wait for one function's replicas; more get 503."
    ),
    client_timeout: float = typer.Option(
        60.0, help="Seconds a client may stay silent while sending or reading; then dropped."
    ),
    tls_self_signed: bool = typer.Option(
        False, help="Serve HTTPS with a certificate made for localhost (kept in the home)."
    ),
    max_buffered_bytes: int = typer.Option(
        256 * 1024 * 1024,
        help="Bytes of request bodies the gateway may hold at once, all requests together; "
        "past it, 503 + Retry-After.",
    ),
    shutdown_grace: int = typer.Option(
        30, help="Seconds that SIGTERM waits for calls and requests in flight; then they fail."
    ),
    gpus: str = typer.Option(
        None,
        help="GPUs replicas may use: 'none', indices ('0,1'), or declared ones ('H100:4', for "
        "machines without them). Default: every GPU the driver reports.",
    ),
    gpu_fallback: str = typer.Option(
        None, help="'cpu': run functions whose GPU this host lacks on the CPU, not refuse them."
    ),
    sandbox: bool = typer.Option(
        True, help="Give each replica its own network, PID and IPC namespaces (bubblewrap + pasta)."
    ),
    backend: str = typer.Option(
        "local", help="Where replicas run: 'local' (this host) or 'ray' (a Ray cluster)."
    ),
    ray_address: str = typer.Option(
        None,
        help="With --backend ray: the cluster's HOST:PORT, as `ray start --head` printed it "
        "(default: the cluster started on this machine, or RAY_ADDRESS).",
    ),
    advertise_url: str = typer.Option(
        None,
        help="This server's URL as replicas on other machines reach it (nested calls), e.g. "
        "http://10.0.0.2:8765; listen on that address too (--host).",
    ),
    volumes_path: Path = typer.Option(
        None,
        help="Keep volumes in this folder, which every node mounts at the same path (NFS, "
        "CephFS, ...): needed for volumes on --backend ray. Default: in the data directory.",
    ),
    ray_node_dir: str = typer.Option(
        "/tmp/ember-node",
        help="With --backend ray: the folder on each node for app sources, images and "
        "volume copies.",
    ),
    park_for: float = typer.Option(3600.0, min=0, help="Seconds a parked replica is kept."),
    max_parked: int = typer.Option(16, min=0, help="Parked replicas kept at most."),
    parked_memory_fraction: float = typer.Option(
        0.5, min=0, max=1, help="Share of host memory parked replicas may hold."
    ),
    prices: Path = typer.Option(
        None, help="TOML price table (USD per second) overriding the default rates."
    ),
    metrics_public: bool = typer.Option(
        False, help="Serve /metrics without a token (default: an admin token)."
    ),
    budget_webhook: str = typer.Option(
        None, help="POST budget alerts (80 %, 100 % of a monthly budget) as JSON to this URL."
    ),
    log_retention_mb: int = typer.Option(
        64, min=1, help="MiB of logs kept per app; the oldest lines go first."
    ),
    call_retention_days: float = typer.Option(
        7.0,
        min=0.001,
        help="Days a finished call is kept (its record; a spawned call's input and output).",
    ),
) -> None:
    """Run the control plane (API, gateway, autoscaler, replicas) in the foreground."""
    os.umask(0o077)  # what the server writes (store, sources, volumes) is for its user alone
    home = home or ember_home()
    if tls_self_signed:
        tls_cert, tls_key = self_signed(home / "tls", ["localhost", "127.0.0.1", host])
    if (tls_cert is None) != (tls_key is None):
        raise typer.BadParameter("--tls-cert and --tls-key go together")
    if gpu_fallback not in (None, "cpu"):
        raise typer.BadParameter("--gpu-fallback takes 'cpu' (or leave it out)")
    if backend not in ("local", "ray"):
        raise typer.BadParameter(f"--backend takes 'local' or 'ray', not {backend!r}")
    if backend == "local" and ray_address:
        raise typer.BadParameter("--ray-address goes with --backend ray")
    settings = ServerSettings(
        home=home,
        host=host,
        port=port,
        database_url=database_url,
        domain=domain,
        tls_cert=tls_cert,
        tls_key=tls_key,
        secret_key=os.environ.get("EMBER_SECRET_KEY"),
        max_queued_requests=max_queued_requests,
        client_timeout=client_timeout,
        max_buffered_bytes=max_buffered_bytes,
        shutdown_grace=shutdown_grace,
        gpus=gpus,
        gpu_fallback_cpu=gpu_fallback == "cpu",
        sandbox=sandbox,
        backend=backend,
        ray_address=ray_address,
        ray_node_dir=ray_node_dir,
        advertise_url=advertise_url,
        volumes_path=volumes_path.absolute() if volumes_path else None,
        park_for=park_for,
        max_parked=max_parked,
        parked_memory_fraction=parked_memory_fraction,
        prices=load_prices(prices),
        metrics_public=metrics_public,
        budget_webhook=budget_webhook,
        log_retention_bytes=log_retention_mb * 1024 * 1024,
        call_retention_days=call_retention_days,
        metering=os.environ.get(NO_METERING_ENV) != "1",
    )
    try:
        sock = listen_socket(host, port)
    except PortUnavailable as exc:
        err.print(f"[red]{exc}[/red]", highlight=False)
        raise typer.Exit(1) from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        gateway = create_app(settings)
    except GpuFlagError as exc:
        raise typer.BadParameter(str(exc)) from None
    except (RayUnavailable, StoreUnavailable) as exc:
        err.print(f"[red]{escape(str(exc))}[/red]", highlight=False)
        raise typer.Exit(1) from None
    console.print(f"Ember server on [bold]{settings.url}[/bold]  (data: {settings.home})")
    console.print(f"Client config: {settings.home / 'config.toml'}")
    if tls_cert is not None:
        console.print(f"HTTPS with certificate {tls_cert}")
    _print_capabilities(gateway.plane.capabilities, gpu_fallback_cpu=settings.gpu_fallback_cpu)
    if not settings.metering:
        console.print(f"[yellow]Metering off ({NO_METERING_ENV}=1, for benchmarks): no usage, "
                      "budgets, request metrics or replica metrics.[/yellow]")  # fmt: skip
    bounded_server(gateway, settings).run(sockets=[sock])


def load_prices(path: Path | None) -> PriceTable:
    if path is None:
        return PriceTable()
    try:
        return PriceTable.load(path)
    except PriceError as exc:
        raise typer.BadParameter(str(exc), param_hint="--prices") from None


def _print_capabilities(capabilities: Capabilities, gpu_fallback_cpu: bool) -> None:
    fallback = "; functions asking for GPUs it lacks run on the CPU" if gpu_fallback_cpu else ""
    if capabilities.where != "this host":
        console.print(f"Replicas run on {capabilities.where}")
    console.print(f"GPUs: {describe_gpus(capabilities.gpus)}{fallback}")
    if capabilities.isolation_missing is None:
        console.print("Replicas: sandboxed (own network, PID and IPC namespaces)")
    else:
        console.print(
            f"[yellow]Replicas are not isolated: {capabilities.isolation_missing}. A web_server "
            "function runs one replica, on the host's port.[/yellow]"
        )
    if capabilities.tenancy_missing is None:
        where = "" if capabilities.where == "this host" else (
            " on each node where Ray runs as root (a node that cannot says so in the logs of "
            "the replicas it runs)"
        )  # fmt: skip
        console.print(f"Apps: isolated from each other{where} (replicas run as an "
                      "unprivileged user)")  # fmt: skip
    else:
        console.print(f"[yellow]Apps are not isolated from each other (single-tenant mode): "
                      f"{capabilities.tenancy_missing}. Replicas can read the server's data "
                      "directory; see the README's Security section.[/yellow]")  # fmt: skip
    forking = capabilities.forking_missing or "on (enable_memory_snapshot)"
    parking = capabilities.checkpoint_missing
    console.print(f"Cold starts: forked replicas {forking}; parked replicas "
                  + ("free their GPU (CUDA checkpoint)" if parking is None
                     else f"keep their GPU context ({parking})"))  # fmt: skip


class PortUnavailable(Exception):
    """The server cannot listen where it was asked to."""


def listen_socket(host: str, port: int) -> socket.socket:
    """A socket bound to host:port (port 0: any free one) for the server to listen on."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        problem = (
            "is in use by another program"
            if exc.errno == errno.EADDRINUSE
            else f"cannot be used ({exc.strerror})"
        )
        raise PortUnavailable(
            f"port {port} on {host} {problem}; stop that program, or choose another port "
            "with --port PORT"
        ) from None
    return sock


def bounded_server(gateway: Gateway, settings: ServerSettings) -> BoundedServer:
    """The server's app under uvicorn, with a shutdown bounded by `settings.shutdown_grace`."""
    app = InFlight(gateway, settings.shutdown_grace, lambda scope: gateway.route(scope) is not None)
    config = uvicorn.Config(
        app,
        log_level="warning",
        timeout_graceful_shutdown=settings.shutdown_grace,
        ssl_certfile=settings.tls_cert,
        ssl_keyfile=settings.tls_key,
    )
    return BoundedServer(config, app)


@contextlib.contextmanager
def embedded_server(
    home: Path, port: int = 0, write_client_config: bool = False
) -> Iterator[ClientSettings]:
    """Run a server in a thread of this process for the duration of a command, on `port` (0: any
    free one; PortUnavailable if it is taken). With `write_client_config`, other terminals find
    it through $EMBER_HOME/config.toml while it runs."""
    sock = listen_socket("127.0.0.1", port)
    settings = ServerSettings(
        home=home, port=sock.getsockname()[1], write_client_config=write_client_config
    )
    server = bounded_server(create_app(settings), settings)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the embedded Ember server failed to start")
        time.sleep(0.02)
    store = SqlStore(settings.db_url)
    token = store.create_token("embedded-run", kind="admin")
    try:
        yield ClientSettings(server_url=settings.url, token=token.token, home=home)
    finally:
        store.revoke_token(token.id)
        store.close()
        server.should_exit = True
        thread.join(timeout=settings.shutdown_grace + 60)


def server_reachable(settings: ClientSettings) -> bool:
    if settings.server_url is None:
        return False
    import httpx

    verify = ssl.create_default_context(cafile=settings.ca_cert) if settings.ca_cert else True
    try:
        response = httpx.get(settings.server_url + "/healthz", timeout=2.0, verify=verify)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


@contextlib.contextmanager
def use_server(settings: ClientSettings) -> Iterator[None]:
    """Point the SDK in this process at `settings` (the SDK reads the environment)."""
    saved = {k: os.environ.get(k) for k in ("EMBER_SERVER_URL", "EMBER_TOKEN")}
    os.environ["EMBER_SERVER_URL"] = settings.server_url or ""
    os.environ["EMBER_TOKEN"] = settings.token or ""
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
