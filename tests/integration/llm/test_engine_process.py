"""The engine process dying under a live `ember llm serve`: a clear error, then a new replica."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import httpx
import pytest

from tests.conftest import alive, descendants, free_port, wait_until
from tests.integration.llm.test_llm_serve import QUESTION, start_llm_serve

pytestmark = pytest.mark.llm


def replica_and_engine(serve_pid: int) -> tuple[int, int] | None:
    """The replica process and the engine process it forked (named `ember-engine`)."""
    engines = [p for p in descendants(serve_pid) if _comm(p) == "ember-engine"]
    if len(engines) != 1:
        return None
    stat = Path(f"/proc/{engines[0]}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1]), engines[0]


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def test_a_dead_engine_fails_its_requests_clearly_and_the_replica_is_replaced(
    model_dir: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    process, endpoint = start_llm_serve(home, str(model_dir), "--port", str(free_port()))
    headers = {"Authorization": f"Bearer {endpoint.api_key}"}
    body = {"model": endpoint.model, "messages": QUESTION, "max_tokens": 400, "stream": True}
    try:
        with httpx.stream(
            "POST", endpoint.base_url + "/chat/completions", json=body, headers=headers, timeout=300
        ) as response:
            lines = response.iter_lines()
            assert next(lines).startswith("data: ")  # generating
            replica, engine = wait_until(lambda: replica_and_engine(process.pid))
            os.kill(engine, signal.SIGKILL)
            events = [line[6:] for line in lines if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        error = json.loads(events[-2])["error"]
        assert error["type"] == "server_error" and "engine process died" in error["message"]
        wait_until(lambda: not alive(replica))  # the replica ended itself...
        client = endpoint.client().with_options(timeout=300)
        reply = wait_until(lambda: _answer(client, endpoint.model), timeout=120)  # ...and a new
        assert "Paris" in reply  # one answers
        assert replica_and_engine(process.pid) is not None
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
        assert process.stdout is not None
        process.stdout.close()


def _answer(client: object, model: str) -> str | None:
    """A chat answer, or None while the replica is being replaced (503, 502)."""
    import openai

    try:
        reply = client.chat.completions.create(  # type: ignore[attr-defined]
            model=model, messages=QUESTION, temperature=0, max_tokens=12
        )
    except (openai.APIStatusError, openai.APIConnectionError):
        return None
    return str(reply.choices[0].message.content)
