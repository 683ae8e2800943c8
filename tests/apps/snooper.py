"""An app whose code goes looking for the server's data and other apps' files, as a hostile
dependency would."""

import os

import ember

own = ember.Volume.from_name("snooper-data", create_if_missing=True)
app = ember.App("snooper")


def attempt(path: str) -> str:
    """What reading `path` gives: its start, its entries, or the error's name."""
    try:
        if os.path.isdir(path):
            return "listed: " + ",".join(sorted(os.listdir(path)))
        with open(path, "rb") as f:
            return "read: " + f.read(64).decode(errors="replace")
    except OSError as exc:
        return type(exc).__name__


def home_is_writable() -> str:
    """Whether the code can write caches in $HOME, as libraries do (~/.cache)."""
    try:
        cache = os.path.join(os.environ["HOME"], ".cache", "snooper")
        os.makedirs(cache, exist_ok=True)
        with open(os.path.join(cache, "probe"), "w") as f:
            f.write("cached")
        return "yes"
    except OSError as exc:
        return type(exc).__name__


def findings(paths: list[str]) -> dict[str, object]:
    return {
        "paths": {path: attempt(path) for path in paths},
        "own_source": attempt(__file__),  # where its server put it (on Ray: its node's copy)
        "uid": os.getuid(),
        "env": dict(os.environ),
        "home_writable": home_is_writable(),
    }


@app.function(volumes={"/data": own})
def look(paths: list[str]) -> dict[str, object]:
    return findings(paths)


@app.cls(volumes={"/data": own}, enable_memory_snapshot=True)
class Forked:
    @ember.method()
    def look(self, paths: list[str]) -> dict[str, object]:
        return findings(paths)
