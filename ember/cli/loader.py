"""Import a user's app file the way `ember run/deploy/serve` need it, with clear errors."""

from __future__ import annotations

import importlib.util
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import typer
from rich.console import Console

from ember.sdk.app import App

err = Console(stderr=True)


@dataclass(frozen=True)
class AppRef:
    path: Path
    object_name: str | None  # the part after `::`


def parse_ref(ref: str) -> AppRef:
    path_text, _, name = ref.partition("::")
    path = Path(path_text)
    if not path.exists():
        err.print(f"[red]No such file: {path}[/red]")
        raise typer.Exit(2)
    if path.suffix != ".py":
        err.print(
            f"[red]{path} is not a Python file; give the path of the file that defines "
            "your ember.App[/red]"
        )
        raise typer.Exit(2)
    return AppRef(path.resolve(), name or None)


def import_file(path: Path) -> ModuleType:
    """Import `path` as a module named after its stem (a fresh copy each time)."""
    name = path.stem
    sys.modules.pop(name, None)
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - any import failure is reported the same way
        sys.modules.pop(name, None)
        err.print(f"[red]{path} does not import:[/red]")
        err.print("".join(traceback.format_exception(exc)), highlight=False, markup=False)
        err.print("[red]Nothing was deployed; fix the error and try again.[/red]")
        raise typer.Exit(1) from None
    return module


def find_app(module: ModuleType, path: Path) -> App:
    apps = [v for v in vars(module).values() if isinstance(v, App)]
    if not apps:
        err.print(f'[red]{path} defines no ember.App; add `app = ember.App("name")`[/red]')
        raise typer.Exit(1)
    named_app = [a for a in apps if getattr(module, "app", None) is a]
    return named_app[0] if named_app else apps[0]


def load_app(ref: AppRef) -> App:
    return find_app(import_file(ref.path), ref.path)
