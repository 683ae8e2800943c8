"""Weights from the page cache to the GPU: the engine's staged upload (llm/engines/builtin/
staging.py) against copying each tensor from pageable memory (what the engine did before) and
against plain safetensors; and the engine's park and wake copies (GPU to pageable host memory and
back) through the same lanes.

A model of the shape's parameters (bf16, a known pattern) is written as one safetensors file, so
its bytes sit in the page cache, as a replica's do after the first start. Each run maps the file
afresh, as a new replica process does, and copies every tensor to one GPU buffer; the staged
runs are checked byte for byte on the GPU; each staged run makes its lanes afresh (pinning
included), as a new engine does. Medians of `--runs`, GB/s of the model's bytes.

    python3 bench/weights.py --shapes qwen2-0.5b,llama3-8b [--runs 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.llm_gpu import SHAPES
from ember.llm.engines.builtin import staging

PATTERN = 0x9E3779B97F4A7C15 >> 1  # a multiplier that makes every 8 bytes differ from the next

Layout = list[tuple[int, int]]  # (offset, bytes) of each tensor in the file's data


def parameter_shapes(shape: str) -> dict[str, tuple[list[int], int]]:
    """name -> (shape, bytes) of the model's parameters, in bf16, without allocating them."""
    from transformers import AutoConfig, AutoModelForCausalLM

    fields = dict(SHAPES[shape])
    config = AutoConfig.for_model(fields.pop("model_type"), **fields)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    return {name: (list(p.shape), p.nbytes) for name, p in model.named_parameters()}


def pattern(size: int, device: str) -> torch.Tensor:
    words = -(-size // 8)
    values = torch.arange(words, dtype=torch.int64, device=device).mul_(PATTERN)
    return values.view(torch.uint8)[:size]


def write_model(shapes: dict[str, tuple[list[int], int]], path: Path) -> tuple[int, Layout]:
    """A safetensors file of the pattern; (where its data starts, each tensor's place in it)."""
    header, layout, offset = {}, [], 0
    for name, (dims, size) in shapes.items():
        header[name] = {"dtype": "BF16", "shape": dims, "data_offsets": [offset, offset + size]}
        layout.append((offset, size))
        offset += size
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with path.open("wb") as f:
        f.write(len(text).to_bytes(8, "little") + text)
        f.write(memoryview(pattern(offset, "cpu").numpy()))
    return 8 + len(text), layout


def mapped(path: Path, start: int, layout: Layout) -> list[torch.Tensor]:
    """The file's tensors as views of a fresh private mapping (as transformers leaves them)."""
    size = start + sum(n for _, n in layout)
    whole = torch.from_file(str(path), shared=False, size=size, dtype=torch.uint8)
    return [whole[start + offset : start + offset + n] for offset, n in layout]


def per_tensor(sources: list[torch.Tensor], gpu: torch.Tensor) -> None:
    offset = 0
    for source in sources:
        gpu[offset : offset + source.numel()].copy_(source)
        offset += source.numel()
    torch.cuda.synchronize()


def timed(runs: int, once: Callable[[], None]) -> list[float]:
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        once()
        seconds.append(time.perf_counter() - start)
    return seconds


def measure(shape: str, runs: int, lanes: list[int], folder: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    path = folder / f"{shape}.safetensors"
    start, layout = write_model(parameter_shapes(shape), path)
    size = sum(n for _, n in layout)
    gpu = torch.empty(size, dtype=torch.uint8, device="cuda")
    targets = [gpu[offset : offset + n] for offset, n in layout]
    expected = pattern(size, "cuda")

    def staged(count: int) -> Callable[[], None]:
        def once() -> None:
            gpu.zero_()
            torch.cuda.synchronize()
            stager = staging.Stager(gpu.device, lanes=count)
            stager.upload(list(zip(mapped(path, start, layout), targets, strict=True)))
            stager.close()
            assert torch.equal(gpu, expected), "the staged upload did not land every byte"

        return once

    host = torch.empty(size, dtype=torch.uint8)
    stager = staging.Stager(gpu.device)

    def wake() -> None:  # the engine's wake: its lanes made once, at its start
        gpu.zero_()
        torch.cuda.synchronize()
        stager.upload([(host, gpu)])
        assert torch.equal(gpu, expected), "park and wake did not keep every byte"

    methods: dict[str, Callable[[], None]] = {
        "safetensors load_file(device=cuda)": lambda: _drop(load_file(str(path), device="cuda")),
        "each tensor from pageable memory": lambda: per_tensor(mapped(path, start, layout), gpu),
        **{f"staged, {n} lanes": staged(n) for n in lanes},
        f"park: GPU to pageable host memory, {staging.LANES} lanes": lambda: stager.download(
            [(gpu, host)]
        ),
        f"wake: back to the GPU, {staging.LANES} lanes": wake,
    }
    figures = {}
    for name, once in methods.items():
        once()  # the first run of each: CUDA streams, the caching allocator, the page cache
        seconds = timed(runs, once)
        median = statistics.median(seconds)
        rate = size / median / 1e9
        figures[name] = {"seconds": median, "min": min(seconds), "max": max(seconds),
                         "gb_per_s": rate}  # fmt: skip
        spread = f"{min(seconds):.3f}-{max(seconds):.3f}"
        print(f"{shape} {size / 1e9:.2f} GB | {name}: {median:.3f} s ({rate:.1f} GB/s; {spread})")
    stager.close()
    path.unlink()
    return {"bytes": size, "tensors": len(layout), "methods": figures}


def _drop(tensors: dict[str, torch.Tensor]) -> None:
    torch.cuda.synchronize()
    tensors.clear()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default="qwen2-0.5b,llama3-8b")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--lanes", default="1,2,4,8")
    parser.add_argument("--folder", type=Path, help="where the model file goes (default: /tmp)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench/weights.py needs a GPU")
    lanes = [int(n) for n in args.lanes.split(",")]
    with tempfile.TemporaryDirectory(dir=args.folder) as folder:
        results = {s: measure(s, args.runs, lanes, Path(folder)) for s in args.shapes.split(",")}
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
