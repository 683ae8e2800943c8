"""Web endpoints of every kind, as users write them."""

import asyncio
import subprocess
import sys
import tempfile
from pathlib import Path

from fastapi import FastAPI, WebSocket
from fastapi.responses import StreamingResponse

import ember

app = ember.App("web")
RELEASE = asyncio.Event()


@app.function(scaledown_window=2)
@ember.concurrent(max_inputs=16)
@ember.asgi_app()
def api():
    web = FastAPI()

    @web.get("/hello")
    async def hello(name: str = "world"):
        return {"message": f"hello {name}"}

    @web.post("/echo")
    async def echo(body: dict):
        return body

    @web.get("/stream")
    async def stream():
        async def events():
            yield "data: first\n\n"
            await asyncio.wait_for(RELEASE.wait(), 30)  # the test releases the last event
            RELEASE.clear()
            yield "data: last\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @web.post("/release")
    async def release():
        RELEASE.set()
        return {"released": True}

    @web.get("/slow")
    async def slow(seconds: float = 1.0):
        await asyncio.sleep(seconds)
        return {"slept": seconds}

    @web.get("/until")
    async def until(path: str):
        """Touches `path`.started, then answers once `path` exists: held as long as a test needs."""
        Path(path + ".started").touch()
        for _ in range(6000):  # at most a minute
            if Path(path).exists():
                return {"released": path}
            await asyncio.sleep(0.01)
        return {"released": None}

    @web.websocket("/ws")
    async def ws(socket: WebSocket):
        await socket.accept()
        while True:
            text = await socket.receive_text()
            await socket.send_text(f"echo: {text}")

    return web


@app.function()
@ember.fastapi_endpoint(method="POST", requires_proxy_auth=True)
def square(item: dict) -> dict:
    return {"square": item["x"] ** 2}


@app.function(scaledown_window=30)
@ember.web_server(port=18765, startup_timeout=30)
def files() -> None:
    root = Path(tempfile.mkdtemp())
    (root / "hello.txt").write_text("served by a separate HTTP process\n")
    subprocess.Popen(
        [sys.executable, "-m", "http.server", "18765", "--bind", "127.0.0.1"], cwd=root
    )


@app.function()
@ember.web_server(port=18766, startup_timeout=2, auth=True)
def never_listens() -> None:
    pass


@app.function()
def not_web() -> int:
    return 1


@app.function()
@ember.wsgi_app()
def legacy():
    def wsgi(environ, start_response):  # type: ignore[no-untyped-def]
        body = f"wsgi says {environ['PATH_INFO']}".encode()
        start_response(
            "200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
        )
        return [body]

    return wsgi


@app.function(scaledown_window=30, max_containers=1)
@ember.asgi_app()
def one_at_a_time():
    """One input per replica and one replica: a held slot blocks everyone else."""
    web = FastAPI()

    @web.get("/forever")
    async def forever():
        async def ticks():
            while True:
                yield "data: tick\n\n"
                await asyncio.sleep(0.05)

        return StreamingResponse(ticks(), media_type="text/event-stream")

    @web.get("/nap")
    async def nap(seconds: float = 1.0):
        await asyncio.sleep(seconds)
        return {"napped": seconds}

    return web
