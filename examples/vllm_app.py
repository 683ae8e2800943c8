"""vLLM behind Ember, the way the Modal examples write it: `ember deploy examples/vllm_app.py`.

A class whose enter hook starts `vllm serve` and waits until it answers, and a `web_server` that
puts it behind Ember's gateway (with key auth), scaling to zero when idle. Point MODEL_DIR at a
local Hugging Face folder; `ember llm serve --engine vllm` does the same with a config file.
"""

import os
import subprocess
import sys
import time
import urllib.request

import ember

MODEL_DIR = os.environ.get("MODEL_DIR", os.path.expanduser("~/.ember/models/SmolLM2-135M-Instruct"))
SERVED_NAME = "llm"
VLLM_PORT = 8000
MINUTES = 60

app = ember.App("vllm-example")


@app.cls(gpu="H100", scaledown_window=15 * MINUTES, timeout=10 * MINUTES)
@ember.concurrent(max_inputs=32)
class Vllm:
    @ember.enter()
    def start_vllm(self) -> None:
        command = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", MODEL_DIR, "--served-model-name", SERVED_NAME,
            "--host", "127.0.0.1", "--port", str(VLLM_PORT), "--max-model-len", "2048",
        ]  # fmt: skip
        env = {**os.environ, "VLLM_SERVER_DEV_MODE": "1", "VLLM_CPU_KVCACHE_SPACE": "2"}
        self.process = subprocess.Popen(command, env=env, start_new_session=True)
        while True:  # the replica is ready once vLLM answers /health
            if self.process.poll() is not None:
                raise RuntimeError(f"vllm serve exited with code {self.process.returncode}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{VLLM_PORT}/health", timeout=2)
                return
            except OSError:
                time.sleep(1)

    @ember.web_server(port=VLLM_PORT, startup_timeout=15 * MINUTES, requires_proxy_auth=True)
    def serve(self) -> None:
        pass  # vllm serve already listens on VLLM_PORT

    @ember.exit()
    def stop_vllm(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)
