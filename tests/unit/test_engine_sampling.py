"""The built-in engine's sampling: greedy rows are exact argmaxes; sampled ones keep to top_p."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from ember.llm.engines.base import SamplingParams  # noqa: E402
from ember.llm.engines.builtin.sampling import sample  # noqa: E402


def test_greedy_rows_are_the_argmax_even_beside_sampled_rows() -> None:
    torch.manual_seed(0)
    logits = torch.randn(6, 50)
    params = [SamplingParams(1, temperature=t) for t in (0, 1.5, 0, 0.7, 0, 2.0)]
    for _ in range(20):
        tokens = sample(logits, params)
        assert tokens[::2].tolist() == logits[::2].argmax(dim=-1).tolist()


def test_sampled_rows_never_leave_their_top_p_nucleus() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]] * 2))
    params = [SamplingParams(1, temperature=1.0, top_p=0.7), SamplingParams(1, temperature=1.0)]
    seen: list[set[int]] = [set(), set()]
    for _ in range(300):
        for row, token in enumerate(sample(logits, params).tolist()):
            seen[row].add(token)
    assert seen[0] == {0, 1}  # 0.5 + 0.3 reach 0.7: tokens 2 and 3 are cut
    assert seen[1] == {0, 1, 2, 3}
