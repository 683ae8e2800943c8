"""The built-in engine's GPU pieces on their own: paged attention and sleep-safe memory.

attention: the Triton kernel against a plain PyTorch reference (float32 and bfloat16, decode and
           prompt chunks, the group sizes of Qwen2-0.5B and Llama-3-8B), then its time per call
           for a decode step at several batch sizes (median of triton's do_bench).
memory:    a DeviceRegion keeps its address across release and restore, and a CUDA graph that
           writes into it replays correctly after a restore.

    python3 bench/llm_kernels.py [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ember.llm.engines.builtin.attention import queries_per_program
from ember.llm.engines.builtin.device_memory import DeviceRegion
from ember.llm.engines.builtin.triton_attention import paged_attention

SHAPES = {"qwen2-0.5b": (14, 2, 64), "llama3-8b": (32, 8, 128)}  # heads, kv heads, head dim
PAGE = 64


def reference(
    q: Any, keys: Any, values: Any, tables: Any, lens: list[int], starts: list[int]
) -> Any:
    """Attention of each sequence's new queries over its whole cache, in float32."""
    heads, kv_heads = q.shape[1], keys.shape[1]
    out = torch.zeros_like(q, dtype=torch.float32)
    for s, length in enumerate(lens):
        a, b = starts[s], starts[s + 1]
        pos = torch.arange(length, device=q.device)
        slots = tables[s, pos // PAGE] * PAGE + pos % PAGE
        k = keys[slots].float().repeat_interleave(heads // kv_heads, dim=1)  # [L, H, D]
        v = values[slots].float().repeat_interleave(heads // kv_heads, dim=1)
        scores = torch.einsum("nhd,lhd->hnl", q[a:b].float(), k) * q.shape[-1] ** -0.5
        query_pos = torch.arange(length - (b - a), length, device=q.device)
        scores = scores.masked_fill(pos[None, None, :] > query_pos[None, :, None], float("-inf"))
        out[a:b] = torch.einsum("hnl,lhd->nhd", scores.softmax(-1), v)
    return out


def case(shape: str, new: list[int], cached: list[int], dtype: Any) -> dict[str, Any]:
    heads, kv_heads, dim = SHAPES[shape]
    lens = [c + n for c, n in zip(cached, new, strict=True)]
    pages_per = max(-(-n // PAGE) for n in lens)
    pages = len(lens) * pages_per + 1
    cuda = torch.device("cuda")
    tables = torch.randperm(pages - 1, device=cuda)[: len(lens) * pages_per].view(len(lens), -1)
    keys = torch.randn(pages * PAGE, kv_heads, dim, dtype=dtype, device=cuda)
    values = torch.randn(pages * PAGE, kv_heads, dim, dtype=dtype, device=cuda)
    q = torch.randn(sum(new), heads * dim, dtype=dtype, device=cuda).view(-1, heads, dim)
    starts = [0]
    for n in new:
        starts.append(starts[-1] + n)
    per = queries_per_program(heads // kv_heads)
    seqs = [s for s, n in enumerate(new) for _ in range(-(-n // per))] + [-1, -1]
    firsts = [j * per for n in new for j in range(-(-n // per))] + [0, 0]

    def ints(values: list[int]) -> Any:
        return torch.tensor(values, dtype=torch.int64, device=cuda)

    args = (
        q, keys, values, tables.long(), ints(lens), ints(starts), ints(seqs), ints(firsts),
        dim**-0.5, PAGE,
    )  # fmt: skip
    out = paged_attention(*args)
    expected = reference(q, keys, values, tables, lens, starts)
    error = ((out.float() - expected).norm() / expected.norm()).item()
    result = {"shape": shape, "dtype": str(dtype), "new": new[:4], "relative_error": error}
    if all(n == 1 for n in new):
        import triton.testing

        result["us_per_call"] = 1000 * triton.testing.do_bench(
            lambda: paged_attention(*args), return_mode="median"
        )
    return result


def attention() -> list[dict[str, Any]]:
    results = []
    for shape in SHAPES:
        for dtype in (torch.float32, torch.bfloat16):
            results.append(case(shape, [1, 1, 1], [5, 200, 64], dtype))
            results.append(case(shape, [130, 1, 7, 64], [0, 300, 90, 64], dtype))
        for batch in (1, 32, 128):
            results.append(case(shape, [1] * batch, [255] * batch, torch.bfloat16))
    return results


def memory() -> dict[str, Any]:
    region = DeviceRegion(64 << 20, torch.device("cuda"))
    data = region.tensor.view(torch.float32)
    source = torch.arange(data.numel(), dtype=torch.float32, device="cuda")
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        data.copy_(source * 2)
    address = data.data_ptr()
    region.release()
    free_while_released = torch.cuda.mem_get_info()[0]
    region.restore()
    graph.replay()
    torch.cuda.synchronize()
    return {
        "same_address": region.tensor.data_ptr() == address,
        "graph_replays_into_restored_memory": bool(torch.equal(data, source * 2)),
        "free_gib_while_released": free_while_released / 2**30,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    results = {"memory": memory(), "attention": attention()}
    for row in results["attention"]:
        print(row)
    print(results["memory"])
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
