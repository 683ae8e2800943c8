"""Image specs: the server's hash is the SDK's, paths stay inside the image, forgeries fail."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

import ember
from ember.image_spec import (
    ImageSpecError,
    check_hash,
    check_image_spec,
    image_hash,
    image_path,
)
from ember.runtime.images import ImageBuilder
from ember.sdk.exceptions import InvalidError

ESCAPES = r"contains '\.\.'"


def test_the_hash_is_the_content_of_the_steps(tmp_path: Path) -> None:
    legit = ember.Image.debian_slim(python_version="3.11").env({"MODE": "legit"})
    check_image_spec(legit.to_spec())
    poisoned = ember.Image.debian_slim(python_version="3.11").env({"MODE": "poisoned"}).to_spec()
    forged = {**poisoned, "hash": legit.hash}  # D3: claim another image's build
    with pytest.raises(ImageSpecError, match="does not match its steps"):
        check_image_spec(forged)
    for bad_hash in ("../../hash_escape_dir", "x" * 5000, None):
        with pytest.raises(ImageSpecError):
            check_image_spec({**poisoned, "hash": bad_hash})


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/app/weights.txt", "app/weights.txt"),  # Modal's usual absolute target: under the root
        ("app/./weights.txt", "app/weights.txt"),
        ("weights.txt", "weights.txt"),
    ],
)
def test_image_paths_land_under_the_root(path: str, expected: str) -> None:
    assert image_path(path) == expected


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("../../../../escaped.txt", "contains '..'"),
        ("/app/../../x", "contains '..'"),
        ("a\0b", "NUL"),
        ("/", "names no file"),
        ("x" * 300, "too long"),
        ("a/" * 600, "too long"),
    ],
)
def test_image_paths_that_leave_are_refused(path: str, message: str) -> None:
    with pytest.raises(ImageSpecError, match=message):
        image_path(path)


def test_the_sdk_refuses_escaping_paths_when_the_image_is_described(tmp_path: Path) -> None:
    payload = tmp_path / "payload.txt"
    payload.write_text("x")
    image = ember.Image.debian_slim()
    with pytest.raises(InvalidError, match=ESCAPES):
        image.add_local_file(payload, "../../../../escaped_by_image_step.txt")
    with pytest.raises(InvalidError, match=ESCAPES):
        image.workdir("../../..")
    with pytest.raises(InvalidError, match=ESCAPES):
        image.add_local_dir(tmp_path, "/app/../..")
    assert image.workdir("/").add_local_file(payload, "/app/p.txt").steps[-1]["files"]


def _spec_with(step: dict[str, object]) -> dict[str, object]:
    spec = ember.Image.debian_slim(python_version="3.11").to_spec()
    spec["steps"] = [step]
    spec["hash"] = image_hash("3.11", [step])  # a correct hash: only the step is wrong
    return spec


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ({"kind": "files", "files": {"../../x": base64.b64encode(b"x").decode()}}, "contains '..'"),
        ({"kind": "files", "files": {"x": "not base64!"}}, "not base64"),
        ({"kind": "workdir", "path": "../../.."}, "contains '..'"),
        ({"kind": "python_source", "files": {"/../x.py": ""}}, "contains '..'"),
        ({"kind": "env", "variables": {"A=B": "x"}}, "without '='"),
        ({"kind": "run_commands", "commands": ["echo \0"]}, "without NUL"),
        ({"kind": "pip_install", "packages": "humanize"}, "'packages' must be a list"),
        ({"kind": "teleport"}, "unknown step"),
    ],
)
def test_malformed_steps_are_refused_naming_the_step(step: dict[str, object], message: str) -> None:
    with pytest.raises(ImageSpecError, match=rf"image step 1 .*{message}"):
        check_image_spec(_spec_with(step))


def test_the_builder_keeps_hashes_and_paths_inside_its_folder(tmp_path: Path) -> None:
    builder = ImageBuilder(tmp_path / "images")
    for bad in ("../../escape", "x" * 5000):
        with pytest.raises(ImageSpecError):
            builder.log_path(bad)
        with pytest.raises(ImageSpecError):
            builder.built(bad)
    assert check_hash("a" * 64) == "a" * 64
