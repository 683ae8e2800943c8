"""The trivial app `bench/calls.py` measures."""

import ember

app = ember.App("bench-calls")


@app.function(scaledown_window=300)
def echo(x: int) -> int:
    return x


@app.function(scaledown_window=0.1)
def cold(x: int) -> int:
    return x
