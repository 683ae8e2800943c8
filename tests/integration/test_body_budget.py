"""A flood of large bodies to a public endpoint: one server-wide budget, 503 past it (D7)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from ember.cli.loader import import_file
from tests.conftest import start_server

APP = """
import asyncio
import os

import ember
from fastapi import FastAPI, Request

app = ember.App("uploads")


@app.function(max_containers=1)
@ember.concurrent(max_inputs=32)
@ember.asgi_app()
def api():
    web = FastAPI()

    @web.post("/size")
    async def size(request: Request, release: str):
        body = await request.body()
        for _ in range(6000):  # held until the test releases it, a minute at most
            if os.path.exists(release):
                break
            await asyncio.sleep(0.01)
        return {"size": len(body)}

    return web
"""

MIB = 1024 * 1024
BODY = 10 * MIB
BUDGET = 40 * MIB  # room for four bodies at once


def test_bodies_past_the_budget_get_503_and_the_budget_comes_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    running = start_server(tmp_path / "home", extra_args=["--max-buffered-bytes", str(BUDGET)])
    try:
        for key, value in running.env().items():
            monkeypatch.setenv(key, value)
        source = tmp_path / "uploads.py"
        source.write_text(APP)
        import_file(source).app.deploy()
        url = f"{running.url}/uploads/api/size"
        release = tmp_path / "release"

        async def flood() -> tuple[list[httpx.Response], list[httpx.Response]]:
            async with httpx.AsyncClient(timeout=120) as client:
                posts = [
                    asyncio.ensure_future(
                        client.post(url, params={"release": str(release)}, content=b"x" * BODY)
                    )
                    for _ in range(20)
                ]
                # Four bodies fill the budget and are held (until the release); the other
                # sixteen are refused, whatever order they arrive in.
                done: set[asyncio.Future[httpx.Response]] = set()
                pending = set(posts)
                while len(done) < 16:
                    finished, pending = await asyncio.wait(
                        pending, return_when=asyncio.FIRST_COMPLETED
                    )
                    done |= finished
                release.touch()
                return [f.result() for f in done], list(await asyncio.gather(*pending))

        refused, served = asyncio.run(flood())
        assert [r.status_code for r in refused] == [503] * 16
        assert refused[0].headers["retry-after"] == "1"
        assert "--max-buffered-bytes" in refused[0].json()["error"]["message"]
        assert [r.json() for r in served] == [{"size": BODY}] * 4

        async def four_more() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=120) as client:
                return list(
                    await asyncio.gather(
                        *(
                            client.post(url, params={"release": str(release)}, content=b"y" * BODY)
                            for _ in range(4)
                        )
                    )
                )

        # Every byte was given back: the whole budget is there again.
        assert [r.json() for r in asyncio.run(four_more())] == [{"size": BODY}] * 4
    finally:
        assert not running.stop()
