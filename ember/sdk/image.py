"""Image: the environment a function runs in, described as a chain of build steps.

On the local backend an image is a virtual environment built by uv (on top of the server's own
packages when the Python version matches) plus files, built once per content hash and shared by
every replica of every app that uses it. Steps that need a container runtime are recorded and
refused at deploy time there, with the name of the backend that supports them.
"""

from __future__ import annotations

import base64
import sys
from pathlib import Path
from typing import Any

from ember.image_spec import ImageSpecError, image_hash, image_path
from ember.sdk.config import in_replica
from ember.sdk.exceptions import InvalidError

Step = dict[str, Any]


class Image:
    """Example:
    image = (ember.Image.debian_slim(python_version="3.11")
             .pip_install("humanize==4.9.0")
             .env({"MODE": "prod"}))
    """

    def __init__(self, python_version: str, steps: tuple[Step, ...] = ()) -> None:
        self.python_version, self.steps = python_version, steps

    def __repr__(self) -> str:
        return f"<ember.Image {self.hash[:12]}>"

    def _with(self, kind: str, **fields: Any) -> Image:
        return Image(self.python_version, (*self.steps, {"kind": kind, **fields}))

    @classmethod
    def debian_slim(cls, python_version: str | None = None) -> Image:
        version = python_version or f"{sys.version_info.major}.{sys.version_info.minor}"
        parts = version.split(".")
        if len(parts) < 2 or not all(p.isdigit() for p in parts):
            raise InvalidError(f"python_version {version!r} should look like '3.11'")
        return cls(".".join(parts[:2]))

    @classmethod
    def from_registry(cls, tag: str, add_python: str | None = None) -> Image:
        return cls(add_python or "3.11", ({"kind": "from_registry", "tag": tag},))

    @classmethod
    def from_dockerfile(cls, path: str | Path) -> Image:
        return cls("3.11", ({"kind": "from_dockerfile", "text": Path(path).read_text()},))

    def pip_install(self, *packages: str | list[str]) -> Image:
        return self._with("pip_install", packages=_flatten(packages))

    def uv_pip_install(self, *packages: str | list[str]) -> Image:
        return self._with("pip_install", packages=_flatten(packages))

    def apt_install(self, *packages: str | list[str]) -> Image:
        return self._with("apt_install", packages=_flatten(packages))

    def run_commands(self, *commands: str | list[str]) -> Image:
        return self._with("run_commands", commands=_flatten(commands))

    def env(self, variables: dict[str, str]) -> Image:
        return self._with("env", variables=dict(variables))

    def workdir(self, path: str) -> Image:
        _inside_image(path, root_ok=True)
        return self._with("workdir", path=path)

    def add_local_file(self, local_path: str | Path, remote_path: str) -> Image:
        local = Path(local_path)
        _inside_image(remote_path)
        if in_replica():
            return self  # its contents are already in the image the replica runs in
        if not local.is_file():
            raise InvalidError(f"add_local_file: {local} is not a file")
        return self._with("files", files={remote_path: _b64(local.read_bytes())})

    def add_local_dir(self, local_path: str | Path, remote_path: str) -> Image:
        local = Path(local_path)
        _inside_image(remote_path, root_ok=True)
        if in_replica():
            return self
        if not local.is_dir():
            raise InvalidError(f"add_local_dir: {local} is not a directory")
        files = {
            f"{remote_path.rstrip('/')}/{p.relative_to(local)}": _b64(p.read_bytes())
            for p in sorted(local.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts
        }
        return self._with("files", files=files)

    def add_local_python_source(self, *modules: str) -> Image:
        """Ship local Python modules or packages so replicas can import them."""
        import importlib.util

        if in_replica():
            return self
        files: dict[str, str] = {}
        for module in modules:
            spec = importlib.util.find_spec(module)
            if spec is None or spec.origin is None:
                raise InvalidError(f"add_local_python_source: cannot find module {module!r}")
            origin = Path(spec.origin)
            if origin.name == "__init__.py":
                root = origin.parent
                for p in sorted(root.rglob("*.py")):
                    files[f"{module}/{p.relative_to(root)}"] = _b64(p.read_bytes())
            else:
                files[f"{module}.py"] = _b64(origin.read_bytes())
        return self._with("python_source", files=files)

    @property
    def hash(self) -> str:
        return image_hash(self.python_version, list(self.steps))

    def to_spec(self) -> dict[str, Any]:
        return {"python_version": self.python_version, "steps": list(self.steps), "hash": self.hash}


def _inside_image(path: str, root_ok: bool = False) -> None:
    try:
        image_path(path, root_ok=root_ok)
    except ImageSpecError as exc:
        raise InvalidError(str(exc)) from None


def _flatten(items: tuple[str | list[str], ...]) -> list[str]:
    flat: list[str] = []
    for item in items:
        flat.extend([item] if isinstance(item, str) else item)
    return flat


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
