"""Two functions mount one volume at the same path: each replica sees its own working copy."""

import os
import signal
from pathlib import Path

import ember

MOUNT = os.environ.get("EMBER_TEST_VOLUME_MOUNT", "/tmp/ember-test-volume")
vol = ember.Volume.from_name("shared-data", create_if_missing=True)
# Replicas import this module again: the image's environment hands them the same mount path.
app = ember.App("volumes", image=ember.Image.debian_slim().env({"EMBER_TEST_VOLUME_MOUNT": MOUNT}))


@app.function(volumes={MOUNT: vol})
def write(name: str, text: str, commit: bool = True) -> str:
    Path(MOUNT, name).parent.mkdir(parents=True, exist_ok=True)
    Path(MOUNT, name).write_text(text)
    if commit:
        vol.commit()
    return os.environ["EMBER_REPLICA_ID"]


@app.function(volumes={MOUNT: vol})
def read(name: str, reload: bool = False) -> str | None:
    if reload:
        vol.reload()
    path = Path(MOUNT, name)
    return path.read_text() if path.exists() else None


@app.function(volumes={MOUNT: vol})
def crash_in_commit(name: str, text: str, where: str) -> None:
    """Write, then die (SIGKILL) inside commit: while flushing the new snapshot ("fsync"), or
    once it is in place but before HEAD names it ("head")."""
    from ember.runtime import volumes

    Path(MOUNT, name).write_text(text)

    def die(*args: object) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    if where == "fsync":
        volumes.os.fsync = die  # type: ignore[attr-defined]
    else:
        volumes.VolumeTree._write_head = die  # type: ignore[method-assign]
    vol.commit()
