"""A small app with the shapes users write: functions, a class with parameters, failures."""

import asyncio
import os
import time

import ember

app = ember.App("hello")


class CustomError(Exception):
    pass


@app.function(scaledown_window=1)
def square(x: int) -> int:
    print(f"squaring {x}")
    return x * x


@app.function()
async def async_double(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


@app.function()
def fail(message: str) -> None:
    raise CustomError(message)


@app.function(timeout=1)
def sleepy(seconds: float) -> str:
    time.sleep(seconds)
    return "awake"


@app.function(retries=2)
def crash_unless_marked(marker: str) -> str:
    """Crashes its replica the first time (no marker file yet), succeeds on the retry."""
    if not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(3)
    return "survived"


@app.function(retries=1)
def always_crash() -> None:
    os._exit(4)


@app.function()
def returns_unpicklable():
    import threading

    return threading.Lock()


@app.function()
def replica() -> str:
    return os.environ["EMBER_REPLICA_ID"]


@app.function()
def nested(x: int) -> int:
    return square.remote(x) + 1


@app.cls(scaledown_window=30)
class Counter:
    start: int = ember.parameter(default=0)

    @ember.enter()
    def setup(self) -> None:
        self.value = self.start
        print(f"Counter enter start={self.start}")

    @ember.method()
    def increment(self, by: int = 1) -> int:
        self.value += by
        return self.value

    @ember.method()
    def whoami(self) -> tuple[str, int]:
        return os.environ["EMBER_REPLICA_ID"], self.start

    @ember.exit()
    def teardown(self) -> None:
        print("Counter exit hook ran", flush=True)


@app.function(scaledown_window=30)
@ember.concurrent(max_inputs=4)
async def concurrent_sleep(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return os.environ["EMBER_REPLICA_ID"]


@app.local_entrypoint()
def main(n: int = 3) -> None:
    print("squares", list(square.map(range(n))))
