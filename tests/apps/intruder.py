"""An app whose code turns on the server with its replica's token, as a hostile dependency would."""

import os

import httpx

import ember

own = ember.Volume.from_name("intruder-data", create_if_missing=True)
app = ember.App("intruder")


@app.function(volumes={"/data": own})
def probe(requests: list[tuple[str, str, dict | None]]) -> list[tuple[int, str]]:
    """Send each (method, path, JSON body) with this replica's own token; return what came back."""
    url, token = os.environ["EMBER_SERVER_URL"], os.environ["EMBER_TOKEN"]
    answers = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as client:
        for method, path, body in requests:
            response = client.request(method, path, json=body, timeout=30)
            answers.append((response.status_code, response.text))
    return answers


@app.function()
def whoami() -> str:
    return "intruder"


@app.function()
def spawn_and_read_own_call() -> str:
    return whoami.spawn().get(timeout=60)


@app.function()
def stolen_token() -> str:
    return os.environ["EMBER_TOKEN"]
