"""An Image on the wire: its build steps, checked, and the content hash that names the build.

The SDK and the server both import this. The server recomputes every image's hash from its steps
and refuses a deploy whose hash disagrees, so a client never chooses which built image a function
runs. Paths inside an image (`add_local_file`, `add_local_dir`, `add_local_python_source`,
`workdir`) stay inside its root: a leading '/' is that root, as in a container; '..' is refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import PurePosixPath

from ember.names import MAX_PART, MAX_PATH, fits_filesystem, shown

HASH = re.compile(r"[0-9a-f]{64}")
PYTHON_VERSION = re.compile(r"[0-9]{1,2}\.[0-9]{1,3}")

# Each step kind and the type of its one field.
STEP_FIELDS: dict[str, tuple[str, type]] = {
    "pip_install": ("packages", list),
    "apt_install": ("packages", list),
    "run_commands": ("commands", list),
    "env": ("variables", dict),
    "workdir": ("path", str),
    "files": ("files", dict),
    "python_source": ("files", dict),
    "from_registry": ("tag", str),
    "from_dockerfile": ("text", str),
}


class ImageSpecError(ValueError):
    """An image spec that cannot be built as sent; the message names the step and the rule."""


def image_hash(python_version: str, steps: list[dict[str, object]]) -> str:
    """The content hash that names an image's build (64 hex digits)."""
    text = json.dumps({"python_version": python_version, "steps": steps}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def check_hash(value: object) -> str:
    if not isinstance(value, str) or not HASH.fullmatch(value):
        raise ImageSpecError(f"image hashes are 64 hex digits, got {_show(value)}")
    return value


def image_path(path: str, *, root_ok: bool = False) -> str:
    """`path` relative to the image's root ("" for the root itself, where `root_ok`).

    Raises ImageSpecError for '..', a NUL, or a name the filesystem cannot hold.
    """
    if "\0" in path:
        raise ImageSpecError(f"image path {shown(path)} contains a NUL character")
    parts = [part for part in PurePosixPath(path).parts if part != "/"]
    if ".." in parts:
        raise ImageSpecError(
            f"image path {shown(path)} contains '..'; paths stay inside the image "
            "(a leading '/' is the image's root)"
        )
    relative = "/".join(parts)
    if not relative and not root_ok:
        raise ImageSpecError(f"image path {shown(path)} names no file inside the image")
    if not fits_filesystem(relative):
        raise ImageSpecError(
            f"image path {shown(path)} is too long: at most {MAX_PATH} bytes, "
            f"{MAX_PART} per file or folder name"
        )
    return relative


def check_image_spec(spec: Mapping[str, object]) -> None:
    """Refuse a spec that is malformed, leaves the image's root, or claims another's hash."""
    version = spec.get("python_version")
    if not isinstance(version, str) or not PYTHON_VERSION.fullmatch(version):
        raise ImageSpecError(f"python_version {_show(version)} should look like '3.11'")
    steps = spec.get("steps")
    if not isinstance(steps, list):
        raise ImageSpecError("an image's steps must be a list")
    for number, step in enumerate(steps, 1):
        try:
            _check_step(step)
        except ImageSpecError as exc:
            kind = step.get("kind") if isinstance(step, dict) else None
            raise ImageSpecError(f"image step {number} ({_show(kind)}): {exc}") from None
    claimed, computed = spec.get("hash"), image_hash(version, steps)
    if claimed != computed:
        raise ImageSpecError(
            f"the image's hash {_show(claimed)} does not match its steps (they hash to "
            f"{computed}); the server names images by the hash of their steps"
        )


def _check_step(step: object) -> None:
    if not isinstance(step, dict) or step.get("kind") not in STEP_FIELDS:
        raise ImageSpecError(f"unknown step; known kinds: {', '.join(sorted(STEP_FIELDS))}")
    kind = step["kind"]
    field, expected = STEP_FIELDS[kind]
    value = step.get(field)
    if not isinstance(value, expected):
        raise ImageSpecError(f"{field!r} must be a {expected.__name__}")
    if isinstance(value, list):
        _check_strings(field, value)
    elif isinstance(value, str):
        _check_strings(field, [value])
        if kind == "workdir":
            image_path(value, root_ok=True)
    elif isinstance(value, dict):
        _check_strings(field, [*value, *value.values()])
        if kind == "env" and any(not key or "=" in key for key in value):
            raise ImageSpecError("environment variable names must be non-empty, without '='")
        if kind != "env":  # files: image path -> base64 contents
            for target, contents in value.items():
                image_path(target)
                _check_base64(target, contents)


def _check_base64(target: str, contents: str) -> None:
    try:
        base64.b64decode(contents, validate=True)
    except binascii.Error:
        raise ImageSpecError(f"the contents of {shown(target)} are not base64") from None


def _check_strings(field: str, values: list[object]) -> None:
    for value in values:
        if not isinstance(value, str) or "\0" in value:
            raise ImageSpecError(f"{field!r} must hold strings without NUL characters")


def _show(value: object) -> str:
    return shown(value) if isinstance(value, str) else repr(value)[:60]
