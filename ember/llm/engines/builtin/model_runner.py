"""Run the model on one step's tokens: fill the inputs, replay a CUDA graph or run eagerly, sample.

A step is a flat list of tokens from several sequences (decode tokens and prompt chunks alike).
On a GPU the step is padded up to the next graph size and replayed as one CUDA graph. The graphs
(a size every few tokens up to the step budget) are captured after the engine is ready, one at a
time between steps (engine.py decides when); a step whose graph is not captured yet runs eagerly.
Their inputs live in one fixed buffer that is refilled before each replay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ember.llm.engines.base import SamplingParams
from ember.llm.engines.builtin import attention
from ember.llm.engines.builtin.device_memory import DeviceRegion, PackedWeights, TensorRegion
from ember.llm.engines.builtin.kv_cache import KVCache
from ember.llm.engines.builtin.sampling import sample
from ember.llm.engines.builtin.scheduler import ScheduledBatch
from ember.llm.engines.builtin.settings import EngineSettings, graph_sizes
from ember.llm.engines.builtin.step_inputs import StepInputs
from ember.llm.models import ModelError
from ember.runtime import phases

RESERVE = 1 << 30  # bytes kept free beside the KV cache: CUDA context, cuBLAS, kernels
_GREEDY = SamplingParams(max_tokens=1, temperature=0.0)


@dataclass(frozen=True)
class Graph:
    graph: torch.cuda.CUDAGraph
    logits: torch.Tensor  # the graph's output, overwritten by each replay


class ModelRunner:
    def __init__(self, model: torch.nn.Module, settings: EngineSettings, device: torch.device):
        self.model, self.settings, self.device = model.eval(), settings, device
        self.cuda = device.type == "cuda"
        text = model.config.get_text_config()  # type: ignore[union-attr,operator]
        heads = text.num_attention_heads
        self.kv_heads = getattr(text, "num_key_value_heads", None) or heads
        self.head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
        self.num_layers = text.num_hidden_layers
        self.dtype = next(model.parameters()).dtype
        self.max_tokens = settings.batched_tokens(self.cuda)
        self.weights: PackedWeights | None = None
        if self.cuda:
            with phases.timed("engine CUDA context"):
                torch.empty(1, device=device)  # made here, not in the next phase
            with phases.timed("engine weights to GPU"):
                self.weights = PackedWeights(model, device)
        model.to(device)  # the buffers (rotary frequencies...): the weights are there already
        group = heads // self.kv_heads
        self.inputs = StepInputs(settings, self.max_tokens, group, device)
        # A one-page cache while measuring the activations' peak; the real one is sized after.
        scratch = TensorRegion(self._page_bytes(), device)
        self.attention = attention.PagedAttention(self._cache(scratch))
        model.set_attn_implementation(attention.NAME)  # type: ignore[operator]
        self.cache = self.attention.cache = self._cache(self._kv_region())
        self.graphs: dict[int, Graph] = {}
        self.sizes = graph_sizes(self.max_tokens)  # a step is padded to one of these to replay
        # Captured once the engine is ready, smallest first, as the engine loop finds time (idle,
        # or a decode step's first use of its size): no request waits for all of them.
        self.uncaptured = list(self.sizes) if self.cuda and settings.cuda_graphs else []
        self._pool: Any = None  # the memory pool every graph shares
        self.asleep = False

    # -- the step --------------------------------------------------------------------------------

    @torch.no_grad()
    def run(self, batch: ScheduledBatch) -> list[int]:
        size = self._graph_size(batch.num_tokens)
        shape = self.inputs.fill(batch, self.cache.scratch_slot, size)
        if size is not None:
            graph = self.graphs[size]
            graph.graph.replay()
            logits = graph.logits
        else:
            logits = self._forward(shape)
        tokens = sample(logits[: len(batch.seqs)], [s.params for s in batch.seqs])
        return tokens.tolist()  # type: ignore[no-any-return]

    def _forward(self, shape: tuple[int, int, int]) -> torch.Tensor:
        views = self.inputs.views(*shape)
        self.attention.metadata = views.metadata
        output = self.model(
            input_ids=views.input_ids.unsqueeze(0), position_ids=views.positions.unsqueeze(0),
            use_cache=False, logits_to_keep=views.logits_index,
        )  # fmt: skip
        return output.logits[0]  # type: ignore[no-any-return]

    def _graph_size(self, tokens: int) -> int | None:
        """The padded size of a step of `tokens`, if its graph is captured (else: run eagerly)."""
        if not self.graphs:
            return None
        size = self._padded(tokens)
        return size if size in self.graphs else None

    def _padded(self, tokens: int) -> int:
        return next(size for size in self.sizes if size >= tokens)

    # -- graphs ------------------------------------------------------------------------------------

    def capture_for(self, tokens: int) -> None:
        """Capture the graph a step of `tokens` replays, if it is still to be captured."""
        size = self._padded(tokens)
        if size in self.uncaptured:
            self.capture(size)

    @torch.no_grad()
    def capture(self, size: int) -> None:
        """Capture the graph of one step size; between steps (it writes the step's inputs)."""
        shape = self.inputs.fill_idle(self.cache.scratch_slot, size)
        self._forward(shape)  # warm-up: compiles kernels, settles cuBLAS
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            logits = self._forward(shape)
        self._pool = graph.pool()
        self.graphs[size] = Graph(graph, logits)
        self.uncaptured.remove(size)

    # -- sleep -------------------------------------------------------------------------------------

    def sleep(self) -> None:
        """Free the KV cache and, on a GPU, park the weights in pinned host memory."""
        self.asleep = True
        if self.weights is not None:
            self.weights.park()
        self.cache.release()
        if self.cuda:
            torch.cuda.empty_cache()

    def wake_up(self) -> None:
        self.cache.restore()  # at the same addresses on a GPU: the graphs stay valid
        if self.weights is not None:
            self.weights.restore()
        self.asleep = False

    # -- start -------------------------------------------------------------------------------------

    def _page_bytes(self) -> int:
        return KVCache.bytes_per_page(
            self.num_layers, self.kv_heads, self.head_dim, self.settings.page_size, self.dtype
        )

    def _cache(self, region: DeviceRegion | TensorRegion) -> KVCache:
        return KVCache(
            region, self.num_layers, self.kv_heads, self.head_dim, self.settings.page_size,
            self.dtype,
        )  # fmt: skip

    def _kv_region(self) -> DeviceRegion | TensorRegion:
        """The real cache: what the memory budget allows, at least one full-length sequence."""
        page = self._page_bytes()
        needed = self.settings.pages_per_seq() + 1  # + the scratch page
        if not self.cuda:
            pages = max(needed, self.settings.cpu_kv_cache_bytes // page)
            with phases.timed("engine KV cache"):
                return TensorRegion(pages * page, self.device)
        with phases.timed("engine first step"):
            activations = self._activation_peak()
        free, total = torch.cuda.mem_get_info()
        assert self.weights is not None
        ours = total * self.settings.gpu_memory_utilization - self.weights.region.size
        budget = min(ours, free) - 2 * activations - RESERVE  # eager steps + graph pool
        if budget < needed * page:
            raise ModelError(
                f"not enough GPU memory for the KV cache of one "
                f"{self.settings.max_model_len}-token sequence ({needed * page / 2**30:.2f} GiB; "
                f"{max(budget, 0) / 2**30:.2f} GiB left): raise model.gpu_memory_utilization "
                "or lower model.max_model_len"
            )
        with phases.timed("engine KV cache"):
            return DeviceRegion(int(budget // page) * page, self.device)

    def _activation_peak(self) -> int:
        """Bytes a step of the largest size allocates beyond what is held before it."""
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        held = torch.cuda.memory_allocated()
        with torch.no_grad():
            shape = self.inputs.fill_idle(self.attention.cache.scratch_slot, self.max_tokens)
            logits = self._forward(shape)
            sample(logits, [_GREEDY] * logits.shape[0])
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - held
        torch.cuda.empty_cache()
        return peak
