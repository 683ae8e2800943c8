"""Build Image specs into uv virtual environments plus files, once per content hash.

An image whose Python version is the server's is layered over the server's own environment (a
`.pth` file puts its site-packages after the image's), so Ember itself and its dependencies need
no reinstall; its own packages come first. Builds happen in a scratch folder renamed into place
on success, so a failed build leaves nothing to reuse; the log is kept either way. Every path
comes from ember/image_spec.py's rules and is resolved inside the build's own folders, so neither
a hash nor a step's path (nor a link an earlier step made) can write outside them.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import site
import subprocess
import sys
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ember.image_spec import ImageSpecError, check_hash, image_path

CONTAINER_STEPS = {
    "apt_install": "apt_install",
    "from_registry": "Image.from_registry",
    "from_dockerfile": "Image.from_dockerfile",
}
Log = Callable[[str], None]


class ImageBuildError(Exception):
    """A build step failed or cannot run here; the message says which and why."""


@dataclass(frozen=True)
class BuiltImage:
    root: Path
    python: Path
    env: dict[str, str]
    workdir: Path


def unsupported_steps(spec: dict[str, Any]) -> list[str]:
    return [CONTAINER_STEPS[s["kind"]] for s in spec["steps"] if s["kind"] in CONTAINER_STEPS]


class ImageBuilder:
    def __init__(self, images_dir: Path) -> None:
        self.images_dir = images_dir

    def log_path(self, image_hash: str) -> Path:
        return self.images_dir / f"{check_hash(image_hash)}.log"

    def built(self, image_hash: str) -> BuiltImage | None:
        root = self.images_dir / check_hash(image_hash)
        meta = root / "image.json"
        if not meta.exists():
            return None
        data = json.loads(meta.read_text())
        return BuiltImage(
            root, root / "venv" / "bin" / "python", data["env"], root / data["workdir"]
        )

    def build(self, spec: dict[str, Any], log: Log | None = None) -> BuiltImage:
        """Build (or find) the image; raises ImageBuildError with the log's tail on failure."""
        image_hash = spec["hash"]
        if (done := self.built(image_hash)) is not None:
            return done
        refused = unsupported_steps(spec)
        if refused:
            raise ImageBuildError(
                f"{', '.join(refused)} needs a container runtime, which the local backend does "
                "not have; use the Ray backend on nodes with containers, or build the "
                "environment with pip_install/run_commands"
            )
        self.images_dir.mkdir(parents=True, exist_ok=True)
        scratch = self.images_dir / f".build-{image_hash[:12]}-{uuid.uuid4().hex[:6]}"
        tail: deque[str] = deque(maxlen=20)
        with self.log_path(image_hash).open("w") as log_file:

            def emit(line: str) -> None:
                log_file.write(line + "\n")
                log_file.flush()
                tail.append(line)
                if log is not None:
                    log(line)

            try:
                meta = _build_into(scratch, spec, emit)
            except (ImageBuildError, ImageSpecError) as exc:
                shutil.rmtree(scratch, ignore_errors=True)
                raise ImageBuildError(f"{exc}\nLast output:\n" + "\n".join(tail)) from None
        (scratch / "image.json").write_text(json.dumps(meta))
        target = self.images_dir / image_hash
        if target.exists():  # built meanwhile by a concurrent deploy
            shutil.rmtree(scratch, ignore_errors=True)
        else:
            scratch.rename(target)
        built = self.built(image_hash)
        assert built is not None
        return built


def _python_for(version: str) -> tuple[str, bool]:
    """The interpreter for `version`, and whether it is the server's own."""
    current = f"{sys.version_info.major}.{sys.version_info.minor}"
    if version == current:
        return sys.executable, True
    found = subprocess.run(
        [_uv(), "python", "find", version, "--no-project"],
        capture_output=True,
        text=True,
        env={**os.environ, "UV_PYTHON_DOWNLOADS": "never"},
    )
    if found.returncode != 0:
        raise ImageBuildError(
            f"Python {version} is not installed on this machine (the local "
            f"backend builds images from installed interpreters; the server "
            f"runs {current})"
        )
    return found.stdout.strip(), False


def _uv() -> str:
    candidate = Path(sys.executable).parent / "uv"
    return str(candidate) if candidate.exists() else "uv"


def _run(
    command: list[str], emit: Log, cwd: Path | None = None, env: dict[str, str] | None = None
) -> None:
    emit("$ " + " ".join(command))
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd, env=env
    )
    assert process.stdout is not None
    for line in process.stdout:
        emit(line.rstrip("\n"))
    if process.wait() != 0:
        raise ImageBuildError(f"step failed (exit code {process.returncode}): {' '.join(command)}")


def _inside(base: Path, relative: str) -> Path:
    """`base/relative`, refused if a link (made by an earlier run_commands step) leads out."""
    target, real_base = (base / relative).resolve(), base.resolve()
    if target != real_base and real_base not in target.parents:
        raise ImageBuildError(f"image path {relative!r} leads out of the image through a link")
    return target


def _build_into(scratch: Path, spec: dict[str, Any], emit: Log) -> dict[str, Any]:
    python, own = _python_for(spec["python_version"])
    venv, root, src = scratch / "venv", scratch / "fs", scratch / "src"
    root.mkdir(parents=True)
    src.mkdir()
    _run([_uv(), "venv", "--python", python, str(venv)], emit)
    venv_python = venv / "bin" / "python"
    site_dir = Path(
        subprocess.run(
            [str(venv_python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    # addsitedir (not a bare path) so the server's own .pth files, editable installs among
    # them, take effect too.
    layers = [str(src)] + [
        f"import site; site.addsitedir({d!r})" for d in (site.getsitepackages() if own else [])
    ]
    (site_dir / "_ember_layers.pth").write_text("\n".join(layers) + "\n")
    env: dict[str, str] = {}
    workdir = "fs"
    for step in spec["steps"]:
        kind = step["kind"]
        if kind == "pip_install" and step["packages"]:
            _run([_uv(), "pip", "install", "--python", str(venv_python), *step["packages"]], emit)
        elif kind == "run_commands":
            shell_env = {
                **os.environ,
                **env,
                "VIRTUAL_ENV": str(venv),
                "PATH": f"{venv / 'bin'}:{os.environ.get('PATH', '')}",
            }
            for command in step["commands"]:
                _run(["bash", "-c", command], emit, cwd=scratch / workdir, env=shell_env)
        elif kind == "env":
            env.update(step["variables"])
        elif kind == "workdir":
            folder = _inside(root, image_path(step["path"], root_ok=True))
            folder.mkdir(parents=True, exist_ok=True)
            workdir = str(folder.relative_to(scratch.resolve()))
        elif kind in ("files", "python_source"):
            base = src if kind == "python_source" else root
            for remote, data in step["files"].items():
                target = _inside(base, image_path(remote))
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(base64.b64decode(data))
            emit(f"added {len(step['files'])} file(s)")
    emit("image ready")
    return {"env": env, "workdir": workdir}
