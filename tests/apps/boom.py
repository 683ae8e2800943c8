"""An endpoint whose errors make uvicorn close the connection (the probe's D4)."""

import os

from fastapi import FastAPI

import ember

app = ember.App("boom")


@app.function(scaledown_window=120, max_containers=1)
@ember.concurrent(max_inputs=8)
@ember.asgi_app()
def api() -> FastAPI:
    web = FastAPI()

    @web.post("/boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    @web.post("/ok")
    async def ok() -> dict[str, str]:
        return {"replica": os.environ["EMBER_REPLICA_ID"]}

    return web
