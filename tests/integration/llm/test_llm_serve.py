"""`ember llm serve` end to end: real CLI, embedded server, gateway, replica and `openai` client."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from ember import wire
from tests.conftest import RunningServer, alive, descendants, free_port, wait_until
from tests.integration.helpers import app_info, ember_cli

pytestmark = pytest.mark.llm

MAX_MODEL_LEN = 512
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


# Clients a test made: closed after it, so no kept-alive socket is left for the garbage collector
# to report (a ResourceWarning, an error under `filterwarnings = error`) in some later test.
OPEN_CLIENTS: list[openai.OpenAI] = []


@dataclass
class Endpoint:
    base_url: str
    api_key: str
    model: str

    def client(self) -> openai.OpenAI:
        """A client, closed when the test ends (tests/integration/llm/conftest.py)."""
        client = openai.OpenAI(base_url=self.base_url, api_key=self.api_key, max_retries=0)
        OPEN_CLIENTS.append(client)
        return client

    def post(self, path: str, body: bytes | dict[str, object]) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json"}
        return httpx.post(self.base_url + path, content=content, headers=headers, timeout=120)


def start_llm_serve(
    home: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], Endpoint]:
    """Run `ember llm serve --json`; its first line of output is the endpoint."""
    with (home / "serve.log").open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "ember.cli.main", "llm", "serve", "--json", *args],
            env={**os.environ, "EMBER_HOME": str(home), **(env or {})},
            stdout=subprocess.PIPE, stderr=log, text=True,
        )  # fmt: skip
    assert process.stdout is not None
    first = process.stdout.readline()
    assert first, f"ember llm serve printed nothing: {(home / 'serve.log').read_text()}"
    return process, Endpoint(**json.loads(first))


@pytest.fixture(scope="module")
def endpoint(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    home = tmp_path_factory.mktemp("home")
    config = home / "config.yaml"
    config.write_text(
        f"model:\n  max_model_len: {MAX_MODEL_LEN}\nservice:\n  scaledown_window: 60\n"
    )
    port = str(free_port())  # not the default 8765, which other runs on this machine may hold
    process, served = start_llm_serve(home, str(model_dir), "--config", str(config), "--port", port)
    yield served
    processes = descendants(process.pid)
    process.send_signal(signal.SIGINT)  # Ctrl-C
    assert process.wait(timeout=60) == 0
    assert process.stdout is not None
    process.stdout.close()
    assert not [p for p in processes if alive(p)], "Ctrl-C left replica processes behind"


def reference_completion(model_dir: Path, prompt: str, max_tokens: int) -> str:
    """What transformers' own greedy `generate` writes after `prompt`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    output = model.generate(ids, max_new_tokens=max_tokens, do_sample=False)
    return str(tokenizer.decode(output[0, ids.shape[1] :], skip_special_tokens=True))


def test_chat_through_the_gateway_streamed_and_not(endpoint: Endpoint) -> None:
    client = endpoint.client()
    assert [m.id for m in client.models.list()] == [endpoint.model]

    reply = client.chat.completions.create(model=endpoint.model, messages=QUESTION, temperature=0)  # type: ignore[arg-type]
    answer = reply.choices[0].message.content or ""
    assert "Paris" in answer
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and reply.usage.completion_tokens > 0

    stream = client.chat.completions.create(
        model=endpoint.model, messages=QUESTION, temperature=0, stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == answer
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1  # per token
    assert (
        chunks[-1].usage is not None and chunks[-1].usage.total_tokens == reply.usage.total_tokens
    )


def test_greedy_over_http_equals_generate_alone_and_batched(
    endpoint: Endpoint, model_dir: Path
) -> None:
    prompts = ["The capital of France is", "Once upon a time", "def fibonacci(n):", "1, 2, 3,"]
    expected = [reference_completion(model_dir, p, 20) for p in prompts]
    client = endpoint.client()

    def complete(prompt: str) -> str:
        reply = client.completions.create(
            model=endpoint.model, prompt=prompt, max_tokens=20, temperature=0
        )
        return reply.choices[0].text

    assert complete(prompts[0]) == expected[0]
    with ThreadPoolExecutor(len(prompts)) as pool:
        assert list(pool.map(complete, prompts)) == expected


def test_stop_strings_and_max_tokens(endpoint: Endpoint) -> None:
    client = endpoint.client()
    stopped = client.completions.create(
        model=endpoint.model,
        prompt="The capital of France is",
        max_tokens=20,
        temperature=0,
        stop=["."],
    )
    assert stopped.choices[0].finish_reason == "stop"
    assert "." not in stopped.choices[0].text and stopped.choices[0].text.strip()
    capped = client.chat.completions.create(
        model=endpoint.model, messages=[{"role": "user", "content": "Tell me a long story."}],
        max_completion_tokens=5, temperature=0.7, top_p=0.9, seed=1,
    )  # fmt: skip
    assert capped.choices[0].finish_reason == "length"
    assert capped.usage is not None and capped.usage.completion_tokens == 5


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b'{"model": "x", "messages": [', 400, "not valid JSON"),
        ({"model": "gpt-4", "messages": QUESTION}, 404, "does not exist"),
        ({"model": "MODEL", "messages": []}, 400, "at least one message"),
        ({"model": "MODEL", "messages": [{"role": "bot", "content": "hi"}]}, 400, "0.role"),
        ({"model": "MODEL", "messages": QUESTION, "max_tokens": 10**5}, 400, "maximum context"),
        ({"model": "MODEL", "messages": [{"role": "user", "content": "hi " * MAX_MODEL_LEN}]}, 400,
         "shorten"),
        ({"model": "MODEL", "messages": QUESTION, "n": 2}, 400, "n=1"),
        ({"model": "MODEL", "messages": QUESTION, "temperature": 5}, 400, "temperature"),
        # Strict types: no "4" for 4, no true for 1.
        ({"model": "MODEL", "messages": QUESTION, "max_tokens": "4"}, 400, "max_tokens"),
        ({"model": "MODEL", "messages": QUESTION, "max_tokens": True}, 400, "max_tokens"),
        # Fields that would change the answer are refused, naming the field (D15).
        ({"model": "MODEL", "messages": QUESTION, "tools": [{"type": "function"}]}, 400, "`tools`"),
        ({"model": "MODEL", "messages": QUESTION, "tool_choice": "required"}, 400, "`tool_choice`"),
        ({"model": "MODEL", "messages": QUESTION, "response_format": {"type": "json_object"}}, 400,
         "`response_format`"),
        ({"model": "MODEL", "messages": QUESTION, "logprobs": True}, 400, "`logprobs`"),
        ({"model": "MODEL", "messages": QUESTION, "top_logprobs": 2}, 400, "`top_logprobs`"),
        ({"model": "MODEL", "messages": QUESTION, "logit_bias": {"1": 5}}, 400, "`logit_bias`"),
        # 50,000 nested brackets: a 400, not a RecursionError (D19).
        (b'{"model": "x", "messages": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", 400,
         "not valid JSON"),
    ],
)  # fmt: skip
def test_bad_requests_get_openai_errors_and_the_engine_keeps_serving(
    endpoint: Endpoint, body: bytes | dict[str, object], status: int, says: str
) -> None:
    if isinstance(body, dict):
        body = {k: endpoint.model if v == "MODEL" else v for k, v in body.items()}
    response = endpoint.post("/chat/completions", body)
    assert response.status_code == status
    error = response.json()["error"]
    assert says in error["message"]
    assert set(error) == {"message", "type", "param", "code"}
    reply = endpoint.client().chat.completions.create(
        model=endpoint.model,
        messages=QUESTION,
        max_tokens=3,  # type: ignore[arg-type]
    )
    assert reply.choices[0].message.content


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"prompt": "\udc80", "max_tokens": 2}, "surrogate"),  # not 500 (D19)
        ({"prompt": "hi", "echo": True}, "`echo`"),
        ({"prompt": "hi", "suffix": "!"}, "`suffix`"),
        ({"prompt": "hi", "best_of": 3}, "`best_of`"),
        ({"prompt": "hi", "logprobs": 1}, "`logprobs`"),
        ({"prompt": [1, 2, "x"]}, "prompt"),
    ],
)
def test_bad_completions_get_a_400_naming_what_is_wrong(
    endpoint: Endpoint, body: dict[str, object], says: str
) -> None:
    # json.dumps writes the surrogate as the escape \\udc80, as the probe sent it
    response = endpoint.post("/completions", json.dumps({"model": endpoint.model, **body}).encode())
    assert response.status_code == 400
    assert says in response.json()["error"]["message"]


def test_a_huge_prompt_is_refused_before_tokenizing_while_streams_go_on(endpoint: Endpoint) -> None:
    client = endpoint.client()
    stream = client.completions.create(
        model=endpoint.model, prompt="Once upon a time", max_tokens=40, temperature=0, stream=True
    )
    first = next(iter(stream))
    huge = {"model": endpoint.model, "prompt": "hello " * 1_750_000}  # 10.5 MB, as D6 sent it
    response = endpoint.post("/completions", huge)
    assert response.status_code == 400
    assert "characters" in response.json()["error"]["message"]  # counted, never tokenized
    rest = list(stream)
    assert rest[-1].choices[0].finish_reason == "length" and first.choices


def test_a_stream_nobody_reads_holds_up_no_one_and_loses_nothing(endpoint: Endpoint) -> None:
    body = {"model": endpoint.model, "prompt": "The capital of France is", "max_tokens": 30,
            "temperature": 0}  # fmt: skip
    answer = endpoint.client().completions.create(**body).choices[0].text  # type: ignore[arg-type]
    headers = {"Authorization": f"Bearer {endpoint.api_key}"}
    with httpx.stream(
        "POST", endpoint.base_url + "/completions", json={**body, "stream": True},
        headers=headers, timeout=120,
    ) as unread:  # fmt: skip
        assert unread.status_code == 200
        other = endpoint.client().completions.create(**{**body, "prompt": "1, 2, 3,"})  # type: ignore[arg-type]
        assert other.choices[0].finish_reason == "length"
        events = [line[6:] for line in unread.iter_lines() if line.startswith("data: {")]
    assert "".join(json.loads(e)["choices"][0]["text"] for e in events) == answer


def test_a_client_that_goes_away_frees_its_place_in_the_batch(endpoint: Endpoint) -> None:
    root = endpoint.base_url.removesuffix("/v1")
    headers = {"Authorization": f"Bearer {endpoint.api_key}"}

    def running() -> float:
        metrics = httpx.get(root + "/metrics", headers=headers).text
        return float(
            next(
                li for li in metrics.splitlines() if li.startswith("ember_llm_engine_running")
            ).split()[1]
        )

    body = {  # ignore_eos: it would run all 400 tokens if nobody stopped it
        "model": endpoint.model,
        "prompt": "Tell me a story.",
        "max_tokens": 400,
        "ignore_eos": True,
        "stream": True,
    }
    with httpx.stream("POST", endpoint.base_url + "/completions", json=body, headers=headers) as r:
        next(r.iter_lines())  # the first token is out
        assert running() == 1
    wait_until(lambda: running() == 0)  # long before 400 tokens


def test_the_key_is_required(endpoint: Endpoint) -> None:
    wrong = openai.OpenAI(base_url=endpoint.base_url, api_key="not-the-key", max_retries=0)
    with wrong, pytest.raises(openai.AuthenticationError):
        wrong.models.list()


def test_metrics_and_no_public_sleep(endpoint: Endpoint) -> None:
    root = endpoint.base_url.removesuffix("/v1")
    headers = {"Authorization": f"Bearer {endpoint.api_key}"}
    endpoint.client().chat.completions.create(model=endpoint.model, messages=QUESTION, max_tokens=4)  # type: ignore[arg-type]
    metrics = httpx.get(root + "/metrics", headers=headers).text
    assert "ember_llm_time_to_first_token_seconds_count" in metrics
    assert "ember_llm_generation_tokens_total" in metrics
    # Only the platform puts the engine to sleep (it parks the replica); a key holder cannot.
    assert httpx.post(root + "/sleep", headers=headers, timeout=60).status_code == 404


def test_an_idle_replica_parks_and_the_next_request_wakes_it(
    server: RunningServer, model_dir: Path, tmp_path: Path
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("service:\n  scaledown_window: 1\n  gpu_snapshot: true\n")
    result = ember_cli(
        "llm", "serve", str(model_dir), "--name", "parks", "--config", str(config), "--json",
        env=server.env(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    served = Endpoint(**json.loads(result.stdout.splitlines()[0]))
    with served.client() as client:
        ask = lambda: client.chat.completions.create(  # noqa: E731
            model=served.model, messages=QUESTION, temperature=0
        )  # type: ignore[arg-type]
        first = ask().choices[0].message.content
        wait_until(lambda: llm_function("parks").replicas == {"parked": 1}, timeout=120)
        assert ask().choices[0].message.content == first  # woken: the same answer
    function = llm_function("parks")
    assert function.replicas == {"ready": 1}
    assert function.cold_start is not None and function.cold_start.tier == "restore"
    assert "wake" in function.cold_start.phases


def test_replicas_fork_from_a_template_that_loaded_the_model(
    server: RunningServer, model_dir: Path
) -> None:
    result = ember_cli(
        "llm", "serve", str(model_dir), "--name", "forks", "--json", env=server.env()
    )
    assert result.returncode == 0, result.stderr
    served = Endpoint(**json.loads(result.stdout.splitlines()[0]))
    with served.client() as client:  # a hung generation fails the request, not the whole suite
        answer = client.chat.completions.create(
            model=served.model, messages=QUESTION, temperature=0, max_tokens=8, timeout=120
        )  # type: ignore[arg-type]
    assert answer.usage is not None and answer.usage.completion_tokens > 0
    function = llm_function("forks")
    assert function.cold_start is not None and function.cold_start.tier == "fork"
    # The engine process's own start is in the replica's cold start, part by part.
    assert "engine KV cache" in function.cold_start.phases


def llm_function(app: str) -> wire.FunctionInfo:
    return next(f for f in app_info(app).functions if f.name == "Server")


def test_against_a_running_server_it_deploys_and_returns(
    server: RunningServer, model_dir: Path
) -> None:
    result = ember_cli("llm", "serve", str(model_dir), "--name", "chat", "--json", env=server.env())
    assert result.returncode == 0, result.stderr
    served = Endpoint(**json.loads(result.stdout.splitlines()[0]))
    assert served.base_url == f"{server.url}/chat/Server/v1"
    reply = served.client().chat.completions.create(
        model=served.model, messages=QUESTION, max_tokens=8
    )  # type: ignore[arg-type]
    assert reply.choices[0].message.content


def test_bad_config_and_models_fail_before_anything_starts(tmp_path: Path) -> None:
    env = {"EMBER_HOME": str(tmp_path / "home")}
    config = tmp_path / "config.yaml"
    config.write_text("model:\n  name: x\n  max_len: 5\nservice:\n  gpus: 2\n")
    result = ember_cli("llm", "serve", "--config", str(config), env=env)
    assert result.returncode == 2
    assert (
        "unknown key `model.max_len`" in result.stderr
        and "unknown key `service.gpus`" in result.stderr
    )
    assert "model.max_model_len" in result.stderr  # the valid keys are listed

    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text('{"architectures": ["BertModel"]}')
    result = ember_cli("llm", "serve", str(tmp_path / "bert"), env=env)
    assert result.returncode == 1 and "not a causal language model" in result.stderr
    result = ember_cli("llm", "serve", str(tmp_path / "missing"), env=env)
    assert result.returncode == 1 and "does not exist" in result.stderr
    assert not (tmp_path / "home" / "ember.db").exists()  # no server was started


@pytest.mark.skipif(
    os.geteuid() != 0, reason="replicas run as another user where the server is root"
)
def test_a_model_folder_replicas_cannot_read_is_named_in_the_error(
    server: RunningServer, model_dir: Path, tmp_path: Path
) -> None:
    closed = tmp_path / "private" / "smol"  # the server's user reads it; ember-replica cannot
    closed.mkdir(parents=True)
    (tmp_path / "private").chmod(0o700)
    for entry in model_dir.iterdir():
        os.link(entry, closed / entry.name)
    result = ember_cli("llm", "serve", str(closed), "--name", "closed", "--json", env=server.env())
    assert result.returncode == 0, result.stderr
    served = Endpoint(**json.loads(result.stdout.splitlines()[0]))
    with pytest.raises(openai.APIStatusError) as failed:
        served.client().chat.completions.create(model=served.model, messages=QUESTION, max_tokens=8)  # type: ignore[arg-type]
    message = str(failed.value)
    assert f"cannot read {closed}/config.json" in message and "ember-replica" in message


def test_a_model_kept_in_a_volume(server: RunningServer, model_dir: Path) -> None:
    env = server.env()
    assert ember_cli("volume", "create", "weights", env=env).returncode == 0
    put = ember_cli("volume", "put", "weights", str(model_dir), "/smol", env=env, timeout=300)
    assert put.returncode == 0, put.stderr
    result = ember_cli("llm", "serve", "volume:weights/smol", "--name", "vol", "--json", env=env)
    assert result.returncode == 0, result.stderr
    served = Endpoint(**json.loads(result.stdout.splitlines()[0]))
    assert served.model == "smol"
    reply = served.client().chat.completions.create(
        model="smol",
        messages=QUESTION,
        temperature=0,  # type: ignore[arg-type]
    )
    assert "Paris" in (reply.choices[0].message.content or "")

    missing = ember_cli("llm", "serve", "volume:weights/nothing", "--name", "x", env=env)
    assert missing.returncode == 1
    assert "ember volume put weights LOCAL_FOLDER /nothing" in missing.stderr
