"""The next token of every sequence in a step, from its logits and its own sampling settings.

Temperature 0 is greedy: the argmax of the float32 logits, exactly what transformers' `generate`
picks. Other rows are scaled by their temperature, cut to their `top_p` nucleus and sampled with
the exponential race (the argmax of p / E with E ~ Exp(1) is a draw from p), which needs no sort
of the whole vocabulary unless some row asks for `top_p` < 1, and no sync with the host.
"""

from __future__ import annotations

import torch

from ember.llm.engines.base import SamplingParams


def sample(logits: torch.Tensor, params: list[SamplingParams]) -> torch.Tensor:
    """Token ids [rows] for logits [rows, vocab]; row i follows params[i]."""
    logits = logits.float()
    greedy = logits.argmax(dim=-1)
    if all(p.temperature == 0 for p in params):
        return greedy
    device = logits.device
    temperature = torch.tensor([p.temperature for p in params], device=device)
    scaled = logits / torch.where(temperature > 0, temperature, 1.0).unsqueeze(1)
    probs = torch.softmax(scaled, dim=-1)
    if any(p.top_p < 1 for p in params):
        probs = _nucleus(probs, torch.tensor([p.top_p for p in params], device=device))
    sampled = (probs / torch.empty_like(probs).exponential_()).argmax(dim=-1)
    return torch.where(temperature == 0, greedy, sampled)


def _nucleus(probs: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Zero every token outside the smallest set whose probability reaches top_p (per row)."""
    ordered, order = probs.sort(dim=-1, descending=True)
    before = ordered.cumsum(dim=-1) - ordered  # probability of the tokens ranked above
    ordered = ordered.masked_fill(before > top_p.unsqueeze(1), 0.0)  # the first always stays
    return torch.zeros_like(probs).scatter_(-1, order, ordered)
