"""The app `ember llm serve` deploys: an OpenAI-compatible endpoint on the built-in engine or vLLM.

An ordinary Ember app, written with the public SDK only: copy it and change what you need. Its
settings come from `ember.llm.config.LLMConfig`, which `ember llm serve` fills from config.yaml
and its flags and hands to the replicas through the image's environment.
"""

import os
import signal
import sys
from typing import Any, cast

import ember
from ember.llm.config import LLMConfig
from ember.llm.engines.base import Engine, TokenEngine
from ember.runtime.metrics import provide_metrics

config = LLMConfig.from_env()
image = ember.Image.debian_slim().env(config.to_env())
app = ember.App(config.app_name, image=image)

STARTUP_TIMEOUT = 900  # seconds: vLLM on a CPU takes about two minutes to answer /health


def endpoint() -> Any:
    """The built-in engine is served by Ember's OpenAI layer; vLLM serves its own."""
    if config.engine == "vllm":
        from ember.llm.engines.vllm import PORT

        return ember.web_server(
            port=PORT, startup_timeout=STARTUP_TIMEOUT, requires_proxy_auth=True
        )
    return ember.asgi_app(requires_proxy_auth=True)


# A model kept in a Volume is mounted at /models/<volume>.
model_volume = config.model_volume
volumes = {model_volume[1]: ember.Volume.from_name(model_volume[0])} if model_volume else {}


@app.cls(
    gpu=config.gpu,
    volumes=volumes,
    timeout=3600,
    scaledown_window=config.service.scaledown_window,
    min_containers=config.service.min_containers,
    enable_memory_snapshot=config.service.memory_snapshot,
    gpu_snapshot=config.parks,
)
@ember.concurrent(max_inputs=config.service.max_concurrent_requests)
class Server:
    engine: Engine

    @ember.enter(snap=True)
    def load(self) -> None:
        """Once per template: imports and weights in host memory (never CUDA)."""
        if config.engine == "vllm":
            from ember.llm.engines.vllm import VllmEngine

            self.engine = VllmEngine(config)
        else:
            from ember.llm.engines.builtin.client import BuiltinEngine

            self.engine = BuiltinEngine(config, on_death=end_replica)
        self.engine.load()

    @ember.enter()
    def start(self) -> None:
        self.engine.start()
        # The engine's TTFT, tokens and queues, collected and re-exported by the server.
        provide_metrics(
            f"{cast(Any, self.engine).url}/metrics"  # vllm serve's own
            if config.engine == "vllm"
            else cast(TokenEngine, self.engine).metrics_text
        )

    @endpoint()
    def serve(self) -> Any:
        if config.engine == "vllm":
            return None  # vllm serve is already listening on its port
        from ember.llm.serving import openai_app

        return openai_app(cast(TokenEngine, self.engine))

    @ember.before_park()
    async def sleep(self) -> None:
        """Weights to host memory and the KV cache freed, so the GPU can be checkpointed."""
        await self.engine.sleep()

    @ember.after_restore()
    async def wake(self) -> None:
        await self.engine.wake_up()

    @ember.exit()
    def stop(self) -> None:
        self.engine.stop()


def end_replica(reason: str) -> None:
    """The engine process died: end this replica (its requests have failed) so a new one starts."""
    print(f"{reason}; ending this replica so that it is replaced", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGTERM)
