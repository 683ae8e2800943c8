"""Followers: print an app's logs, or its image builds, while a command runs."""

from __future__ import annotations

import threading

from rich.text import Text

from ember.cli.output import err
from ember.sdk.app import App
from ember.sdk.client import Client
from ember.sdk.synchronizer import run_sync


class Follower:
    """Polls in a thread and prints what is new; prints the rest on exit."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Follower:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._poll()

    def _run(self) -> None:
        while not self._stop.wait(0.3):
            self._poll()

    def _poll(self) -> None:
        try:
            self.print_new()
        except Exception:  # noqa: BLE001 - following is best effort while the command runs
            return

    def print_new(self) -> None:
        raise NotImplementedError


class LogFollower(Follower):
    """An app's replica logs."""

    def __init__(self, app_name: str) -> None:
        super().__init__()
        self._app, self._after = app_name, 0

    def print_new(self) -> None:
        lines = run_sync(
            Client.from_settings().json(
                "GET", f"/api/v1/apps/{self._app}/logs", params={"after": self._after}
            )
        )
        for line in lines:
            self._after = line["id"]
            prefix = Text(f"{line['function']} {line['replica'][:8]} ", style="dim")
            err.print(prefix + Text(line["text"]), highlight=False)


class BuildFollower(Follower):
    """The build output of the app's images, as the server builds them."""

    def __init__(self, app: App) -> None:
        super().__init__()
        hashes = {str(s.image["hash"]) for s in app.specs.values() if s.image}
        self._offsets = dict.fromkeys(hashes, 0)

    def __enter__(self) -> Follower:
        """Skip images built before this command: only builds it causes are shown."""
        for image_hash in list(self._offsets):
            try:
                response = run_sync(
                    Client.from_settings().request(
                        "GET", f"/api/v1/images/{image_hash}/logs", params={"offset": 0}
                    )
                )
            except Exception:  # noqa: BLE001 - not built yet (404), or no server yet
                continue
            if response.headers.get("x-ember-image-built") == "1":
                del self._offsets[image_hash]
        return super().__enter__()

    def print_new(self) -> None:
        for image_hash, offset in self._offsets.items():
            response = run_sync(
                Client.from_settings().request(
                    "GET", f"/api/v1/images/{image_hash}/logs", params={"offset": offset}
                )
            )
            self._offsets[image_hash] = offset + len(response.content)
            for line in response.text.splitlines():
                err.print(
                    Text(f"image {image_hash[:8]} ", style="dim") + Text(line), highlight=False
                )
