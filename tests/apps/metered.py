"""An app for the metering, metrics and budget tests: replicas held as long as a test wants, a
web endpoint, and a class that serves its own metrics."""

import os
import time

import ember
from ember.runtime.metrics import provide_metrics

app = ember.App("metered")


@app.function(scaledown_window=2, cpu=1.0)
def ping(x: int) -> int:
    return x


@app.function(scaledown_window=60, cpu=1.0)
def hold(marker: str) -> str:
    """Runs until the test creates `marker`."""
    while not os.path.exists(marker):
        time.sleep(0.02)
    return "released"


@app.function(scaledown_window=60, cpu=1.0)
@ember.asgi_app()
def web():
    from fastapi import FastAPI

    api = FastAPI()

    @api.get("/hello")
    async def hello() -> dict[str, str]:
        return {"message": "hello"}

    return api


@app.cls(scaledown_window=2)
class Engine:
    @ember.enter()
    def start(self) -> None:
        self.tokens = 0
        provide_metrics(
            lambda: (
                f"# TYPE demo_tokens_total counter\ndemo_tokens_total {self.tokens}\n"
                f"# TYPE demo_running gauge\ndemo_running 1\n"
            )
        )

    @ember.method()
    def generate(self, n: int) -> int:
        self.tokens += n
        return self.tokens
