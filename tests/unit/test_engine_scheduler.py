"""The built-in engine's scheduler: token budget, prompt chunks, preemption, aborts, finishing."""

from __future__ import annotations

from ember.llm.engines.base import SamplingParams
from ember.llm.engines.builtin.kv_cache import BlockAllocator
from ember.llm.engines.builtin.scheduler import ScheduledBatch, Scheduler
from ember.llm.engines.builtin.sequence import Sequence, Status

PAGE = 4
EOS = 99


def scheduler(pages: int = 100, max_seqs: int = 8, budget: int = 16) -> Scheduler:
    return Scheduler(BlockAllocator(pages, PAGE), max_seqs, budget, 64, [EOS])


def add(s: Scheduler, name: str, prompt_len: int, max_tokens: int = 8, **params: bool) -> Sequence:
    prompt = list(range(prompt_len))
    seq = Sequence.of(name, prompt, SamplingParams(max_tokens=max_tokens, **params))
    s.add(seq)
    return seq


def position_model(seq: Sequence) -> int:
    """A stand-in for the model: the next token is the sequence's length so far."""
    return seq.num_tokens


def step(s: Scheduler, token: int | None = None) -> tuple[ScheduledBatch, list[str]]:
    """One engine step; the ids of the requests that finished in it."""
    batch = s.schedule()
    sampled = [position_model(q) if token is None else token for q in batch.seqs]
    outputs = s.update(batch, sampled)
    return batch, [o.request_id for o in outputs if o.finish_reason]


def names(batch: ScheduledBatch) -> list[str]:
    return [q.request_id for q in batch.seqs]


def test_prompts_are_cut_into_chunks_within_the_budget_and_decodes_ride_along() -> None:
    s = scheduler(budget=16)
    long = add(s, "long", 40)
    batch, _ = step(s)
    assert batch.num_new == [16] and long.num_output_tokens == 0  # a chunk: nothing sampled
    short = add(s, "short", 3)
    batch, _ = step(s)
    assert names(batch) == ["long"] and batch.num_new == [16]  # the budget is spent
    batch, _ = step(s)
    assert names(batch) == ["long", "short"] and batch.num_new == [8, 3]
    assert long.token_ids[40:] == [40] and short.token_ids[3:] == [3]
    batch, _ = step(s)
    assert batch.num_new == [1, 1]  # both decoding: one token each


def test_requests_finish_at_max_tokens_or_end_of_sequence_and_give_their_pages_back() -> None:
    s = scheduler(pages=10)
    capped = add(s, "capped", 5, max_tokens=3)
    assert [name for _ in range(3) for name in step(s)[1]] == ["capped"]
    assert capped.token_ids[5:] == [5, 6, 7]
    stopped = add(s, "stopped", 5, max_tokens=30)
    assert step(s, token=EOS)[1] == ["stopped"] and stopped.token_ids[5:] == [EOS]
    assert len(s.allocator.free_pages) == 10 and not s.has_work()


def test_ignore_eos_goes_on_past_end_of_sequence_tokens() -> None:
    s = scheduler()
    seq = add(s, "r", 2, max_tokens=3, ignore_eos=True)
    assert [name for _ in range(3) for name in step(s, token=EOS)[1]] == ["r"]
    assert seq.token_ids[2:] == [EOS] * 3


def test_the_newest_request_is_preempted_when_pages_run_out_and_resumes_later() -> None:
    s = scheduler(pages=4, budget=64)  # 16 tokens of cache: room for one whole request
    old = add(s, "old", 7, max_tokens=8)
    new = add(s, "new", 7, max_tokens=8)
    step(s)  # both prompts: two pages each, every page in use
    while new.status is Status.RUNNING:
        step(s)
    assert s.preemptions == 1 and new.block_table == [] and new.num_computed == 0
    finished = []
    while s.has_work():
        finished += step(s)[1]
    assert finished == ["old", "new"]
    # Computed again from scratch, prompt and output, it went on where it stopped.
    assert old.token_ids[7:] == new.token_ids[7:] == list(range(7, 15))
    assert len(s.allocator.free_pages) == 4


def test_no_more_sequences_than_max_seqs_run_at_once() -> None:
    s = scheduler(max_seqs=2)
    for i in range(3):
        add(s, f"r{i}", 2)
    batch, _ = step(s)
    assert names(batch) == ["r0", "r1"] and len(s.waiting) == 1


def test_aborted_requests_leave_the_batch_and_free_their_pages() -> None:
    s = scheduler(pages=10)
    add(s, "running", 5)
    add(s, "kept", 5)
    step(s)
    add(s, "waiting", 5)
    s.abort(["running", "waiting", "unknown"])
    batch, _ = step(s)
    assert names(batch) == ["kept"]
    assert len(s.allocator.free_pages) == 10 - 2  # "kept": 7 tokens in two pages
