"""Images: real uv builds of a PyPI package into an environment replicas then use."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import BACKEND
from tests.integration.helpers import APPS, cli_json, ember_cli

BAD = """
import ember
app = ember.App("bad-image")

@app.function(image=ember.Image.debian_slim(){step})
def f():
    return 1
"""


def test_image_build_and_use(server) -> None:  # type: ignore[no-untyped-def]
    deployed = ember_cli("deploy", str(APPS / "imaged.py"), env=server.env(), timeout=300)
    assert deployed.returncode == 0, deployed.stderr
    assert "image ready" in deployed.stderr  # build output streamed to the terminal
    result = ember_cli("run", f"{APPS / 'imaged.py'}::describe", env=server.env())
    assert result.returncode == 0, result.stderr
    assert "'size': '1.0 MB'" in result.stdout
    assert "'greeting': 'from the image'" in result.stdout
    assert "'weights': 'weights v1'" in result.stdout
    assert "'marker': 'built-by-run-commands'" in result.stdout
    if BACKEND == "ray":  # each node builds it once, in the first replica's log
        assert "[image] image ready" in result.stderr
    else:
        assert "image ready" not in result.stderr  # built once per hash: not built again

    image_hash = next(
        f["image"] for f in cli_json("app", "show", "imaged", env=server.env())["functions"]
    )
    logs = ember_cli("image", "logs", image_hash, env=server.env())
    assert "humanize" in logs.stdout and "image ready" in logs.stdout


def test_bad_images_fail_at_deploy_with_clear_errors(server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cases = {
        '.pip_install("ember-no-such-package-xyz")': "step failed",
        '.apt_install("curl")': "apt_install needs a container runtime",
        '.run_commands("exit 3")': "step failed (exit code 3)",
    }
    for step, message in cases.items():
        source = tmp_path / "bad_image.py"
        source.write_text(BAD.format(step=step))
        result = ember_cli("deploy", str(source), env=server.env(), timeout=300)
        assert result.returncode == 1
        assert message in result.stderr, result.stderr
    source.write_text(
        BAD.format(step="").replace("debian_slim()", 'debian_slim(python_version="3.99")')
    )
    result = ember_cli("deploy", str(source), env=server.env())
    assert "Python 3.99 is not installed on this machine" in result.stderr
    assert cli_json("app", "list", env=server.env()) == []  # nothing half-deployed
    images = server.home / "images"
    assert not any(p.name.startswith(".build-") for p in images.iterdir())
