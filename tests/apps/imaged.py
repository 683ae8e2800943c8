"""An app whose function runs in its own image."""

from pathlib import Path

import ember

ASSETS = Path(__file__).parent / "assets"

image = (
    ember.Image.debian_slim()
    .pip_install("humanize==4.9.0")
    .env({"GREETING": "from the image"})
    .workdir("/app")
    .add_local_file(ASSETS / "weights.txt", "/app/weights.txt")
    .run_commands("echo built-by-run-commands > marker.txt")
)

app = ember.App("imaged")


@app.function(image=image)
def describe() -> dict:
    import os

    import humanize

    return {
        "size": humanize.naturalsize(1_000_000),
        "greeting": os.environ["GREETING"],
        "weights": Path("weights.txt").read_text().strip(),
        "marker": Path("marker.txt").read_text().strip(),
    }
