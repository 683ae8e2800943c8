"""The GPU engine's Triton paged-attention kernel, run by Triton's interpreter on the CPU, against
plain attention over the same pages: decode steps, prompt chunks over a cached prefix, grouped
heads, padding programs, head sizes that are not a power of two."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("torch")
pytest.importorskip("triton", reason="Triton is not installed")

PAGE = 16
CASES = [  # heads, kv heads, head size, new tokens per sequence, tokens cached before
    (4, 2, 16, [1, 1, 1], [5, 17, 33]),  # decode steps
    (4, 2, 16, [7, 20], [0, 0]),  # whole prompts
    (8, 2, 32, [5, 1, 12], [10, 40, 3]),  # prompt chunks over a cached prefix, with a decode
    (14, 2, 64, [3, 1], [0, 30]),  # Qwen2-0.5B's grouping (7 query heads per key head)
    (4, 4, 24, [3, 1], [4, 9]),  # one key head per query head, head size 24
]


@pytest.fixture(scope="module")
def errors() -> list[float]:
    """Relative errors of every case, from a fresh interpreter: Triton reads TRITON_INTERPRET
    when its own modules are imported, so it cannot be switched on in this process."""
    code = "from tests.unit.test_paged_attention import run_all; run_all()"
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return list(json.loads(done.stdout.splitlines()[-1]))


@pytest.mark.parametrize("case", range(len(CASES)))
def test_the_kernel_matches_plain_attention(errors: list[float], case: int) -> None:
    assert errors[case] < 1e-5


def run_all() -> None:
    print(json.dumps([relative_error(*case) for case in CASES]))


def relative_error(heads: int, kv_heads: int, dim: int, new: list[int], cached: list[int]) -> float:
    import torch

    from ember.llm.engines.builtin.attention import queries_per_program
    from ember.llm.engines.builtin.triton_attention import paged_attention

    torch.manual_seed(0)
    lens = [c + n for c, n in zip(cached, new, strict=True)]
    pages_per = max(-(-n // PAGE) for n in lens)
    tables = torch.randperm(len(lens) * pages_per + 1)[: len(lens) * pages_per].view(len(lens), -1)
    slots = (len(lens) * pages_per + 1) * PAGE
    keys, values = torch.randn(slots, kv_heads, dim), torch.randn(slots, kv_heads, dim)
    q = torch.randn(sum(new), heads * dim).view(-1, heads, dim)  # strided like the model's
    starts = [0]
    for n in new:
        starts.append(starts[-1] + n)
    per = queries_per_program(heads // kv_heads)
    programs = [(s, j * per) for s, n in enumerate(new) for j in range(-(-n // per))]
    programs += [(-1, 0)] * 3  # padding: these programs must do nothing

    def ints(xs: list[int]) -> torch.Tensor:
        return torch.tensor(xs, dtype=torch.int64)

    out = paged_attention(
        q, keys, values, tables, ints(lens), ints(starts), ints([p[0] for p in programs]),
        ints([p[1] for p in programs]), dim**-0.5, PAGE,
    )  # fmt: skip
    expected = torch.zeros_like(q)
    for s, length in enumerate(lens):  # plain attention, one sequence at a time
        a, b = starts[s], starts[s + 1]
        pos = torch.arange(length)
        cache = tables[s, pos // PAGE] * PAGE + pos % PAGE
        k = keys[cache].repeat_interleave(heads // kv_heads, dim=1)
        v = values[cache].repeat_interleave(heads // kv_heads, dim=1)
        scores = torch.einsum("nhd,lhd->hnl", q[a:b], k) * dim**-0.5
        visible = pos[None, None, :] <= torch.arange(length - (b - a), length)[None, :, None]
        weights = scores.masked_fill(~visible, -torch.inf).softmax(-1)
        expected[a:b] = torch.einsum("hnl,lhd->nhd", weights, v)
    return float((out - expected).norm() / expected.norm())
