"""`ember server`, and the embedded server that `ember run` starts when none is configured."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import typer
import uvicorn

from ember.backends.base import Capabilities
from ember.backends.gpus import GpuFlagError
from ember.cli.output import console
from ember.sdk.config import ClientSettings, ember_home
from ember.server.app import create_app
from ember.server.replicas.placement import describe_gpus
from ember.server.settings import ServerSettings
from ember.server.store.sql import SqlStore
from ember.server.tls import self_signed


def server(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8765, help="Port to listen on."),
    home: Path = typer.Option(None, help="Data directory (default: $EMBER_HOME or ~/.ember)."),
    database_url: str = typer.Option(None, help="SQLAlchemy URL (default: SQLite in the home)."),
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
    gpus: str = typer.Option(
        None,
        help="GPUs replicas may use: 'none', indices ('0,1'), or declared ones ('H100:4', for "
        "machines without them). Default: every GPU the driver reports.",
    ),
    gpu_fallback: str = typer.Option(
        None, help="'cpu': run functions whose GPU this host lacks on the CPU, not refuse them."
    ),
    sandbox: bool = typer.Option(
        True, help="Give each replica its own network and PID namespaces (bubblewrap + pasta)."
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
        gpus=gpus,
        gpu_fallback_cpu=gpu_fallback == "cpu",
        sandbox=sandbox,
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        app = create_app(settings)
    except GpuFlagError as exc:
        raise typer.BadParameter(str(exc)) from None
    console.print(f"Ember server on [bold]{settings.url}[/bold]  (data: {settings.home})")
    console.print(f"Client config: {settings.home / 'config.toml'}")
    if tls_cert is not None:
        console.print(f"HTTPS with certificate {tls_cert}")
    _print_capabilities(app.plane.capabilities, gpu_fallback_cpu=settings.gpu_fallback_cpu)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="warning",
        ssl_certfile=tls_cert,
        ssl_keyfile=tls_key,
    )


def _print_capabilities(capabilities: Capabilities, gpu_fallback_cpu: bool) -> None:
    fallback = "; functions asking for GPUs it lacks run on the CPU" if gpu_fallback_cpu else ""
    console.print(f"GPUs: {describe_gpus(capabilities.gpus)}{fallback}")
    if capabilities.isolation_missing is None:
        console.print("Replicas: sandboxed (own network and PID namespaces)")
    else:
        console.print(
            f"[yellow]Replicas are not isolated: {capabilities.isolation_missing}. A web_server "
            "function runs one replica, on the host's port.[/yellow]"
        )


def _free_port() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.contextmanager
def embedded_server(home: Path) -> Iterator[ClientSettings]:
    """Run a server in a thread of this process for the duration of a command."""
    sock = _free_port()
    port = sock.getsockname()[1]
    settings = ServerSettings(home=home, port=port, write_client_config=False)
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning"))
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
        thread.join(timeout=60)


def server_reachable(settings: ClientSettings) -> bool:
    if settings.server_url is None:
        return False
    import httpx

    try:
        return httpx.get(settings.server_url + "/healthz", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


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
