"""scripts/setup installs only what is missing: serve (llm) and test (llm,vllm,dev) alternate.

Runs the real script in a copy of the project whose .venv/bin/python only records what it is
asked to do (installing for real takes minutes and the network)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).parents[2]


def project(tmp_path: Path) -> Path:
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "setup", tmp_path / "scripts" / "setup")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(f'#!/bin/sh\necho "$*" >> {tmp_path / "pip.log"}\n')
    python.chmod(0o755)
    return tmp_path


def setup(root: Path, extras: str) -> list[str]:
    """The `-e` installs that `scripts/setup EXTRAS` asked pip for."""
    log = root / "pip.log"
    before = log.read_text().splitlines() if log.exists() else []
    subprocess.run(["bash", str(root / "scripts" / "setup"), extras], check=True, cwd=root)
    after = log.read_text().splitlines() if log.exists() else []
    return [line.rsplit(" ", 1)[-1] for line in after[len(before) :] if " -e " in line]


def test_extras_already_installed_install_nothing_and_new_ones_add_to_them(tmp_path: Path) -> None:
    root = project(tmp_path)
    assert setup(root, "llm") == [".[llm]"]
    assert setup(root, "llm") == []
    assert setup(root, "llm,vllm,dev") == [".[dev,llm,vllm]"]
    assert setup(root, "llm") == []  # scripts/serve after scripts/test
    assert setup(root, "dev,llm,vllm") == []  # and scripts/test again
    assert setup(root, "") == []
    assert setup(root, "ray") == [".[dev,llm,ray,vllm]"]


def test_a_changed_pyproject_installs_again(tmp_path: Path) -> None:
    root = project(tmp_path)
    assert setup(root, "dev") == [".[dev]"]
    with (root / "pyproject.toml").open("a") as f:
        f.write("\n# a new dependency\n")
    assert setup(root, "dev") == [".[dev]"]
