"""Paged attention on the GPU: one Triton kernel for prefill chunks and decode steps alike.

Each program takes a few query tokens of one sequence together with every query head that shares
one key/value head (grouped-query attention), and walks that sequence's pages of the KV cache up to
the last position those queries may see, with an online softmax (FlashAttention's recurrence). The
grid is fixed by the step's padded size, so a CUDA graph captured once serves any mix of sequences
of that size: programs past the real work read `q_block_seq == -1` and return.
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl

from ember.llm.engines.builtin.attention import MIN_DOT_ROWS, queries_per_program


def prepare() -> None:
    """Do before CUDA what every process would do again at its first kernel, so that processes
    forked from this one (a template's replicas, their engines) inherit it: Triton's key to its
    cache of compiled kernels hashes Triton's own sources and library, 0.5-1 s on an H100 host."""
    with contextlib.suppress(ImportError):  # Triton's internals; without them, each pays it
        from triton.runtime.cache import triton_key

        triton_key()


def paged_attention(
    query: torch.Tensor,  # [tokens, heads, head_dim], any strides with a unit last one
    key_cache: torch.Tensor,  # [slots, kv_heads, head_dim]
    value_cache: torch.Tensor,
    block_tables: torch.Tensor,  # [sequences, pages per sequence] int32
    seq_lens: torch.Tensor,  # [sequences] tokens in the cache once this step's are written
    query_start: torch.Tensor,  # [sequences + 1] where each sequence's queries start
    q_block_seq: torch.Tensor,  # [programs] sequence of each program, -1 for none
    q_block_first: torch.Tensor,  # [programs] its first query, counted within the sequence
    scale: float,
    page_size: int,
) -> torch.Tensor:
    tokens, heads, head_dim = query.shape
    kv_heads = key_cache.shape[1]
    group = heads // kv_heads
    out = torch.empty((tokens, heads, head_dim), dtype=query.dtype, device=query.device)
    grid = (q_block_seq.shape[0], kv_heads)
    _paged_attention_kernel[grid](
        query, key_cache, value_cache, out, block_tables, seq_lens, query_start,
        q_block_seq, q_block_first, scale,
        query.stride(0), query.stride(1), out.stride(0), out.stride(1),
        key_cache.stride(0), key_cache.stride(1), block_tables.stride(0),
        GROUP=group, GROUP_PAD=triton.next_power_of_2(group),
        BLOCK_Q=queries_per_program(group), HEAD_DIM=head_dim,
        HEAD_DIM_PAD=max(MIN_DOT_ROWS, triton.next_power_of_2(head_dim)), PAGE=page_size,
        IEEE=query.dtype == torch.float32,
    )  # fmt: skip
    return out


@triton.jit  # type: ignore[untyped-decorator]
def _paged_attention_kernel(  # type: ignore[no-untyped-def]
    # Triton reads parameter annotations itself: only tl.constexpr may be written.
    q_ptr, k_ptr, v_ptr, out_ptr, block_tables_ptr, seq_lens_ptr,
    query_start_ptr, q_block_seq_ptr, q_block_first_ptr, scale,
    stride_qt, stride_qh, stride_ot, stride_oh, stride_kslot, stride_kh, stride_bt,
    GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, BLOCK_Q: tl.constexpr,
    HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr, PAGE: tl.constexpr, IEEE: tl.constexpr,
):  # fmt: skip
    program = tl.program_id(0)
    kv_head = tl.program_id(1)
    seq = tl.load(q_block_seq_ptr + program)
    if seq < 0:
        return
    first = tl.load(q_block_first_ptr + program)
    q_start = tl.load(query_start_ptr + seq)
    q_len = tl.load(query_start_ptr + seq + 1) - q_start
    cached = tl.load(seq_lens_ptr + seq) - q_len  # tokens cached before this step

    # Rows are (query token, head of the group) pairs.
    rows = tl.arange(0, BLOCK_Q * GROUP_PAD)
    q_index = first + rows // GROUP_PAD
    head = kv_head * GROUP + rows % GROUP_PAD
    row_ok = (q_index < q_len) & (rows % GROUP_PAD < GROUP)
    dims = tl.arange(0, HEAD_DIM_PAD)
    dim_ok = dims < HEAD_DIM
    q_rows = (q_start + q_index) * stride_qt + head * stride_qh
    q = tl.load(
        q_ptr + q_rows[:, None] + dims[None, :], mask=row_ok[:, None] & dim_ok[None, :], other=0.0
    )
    q_pos = cached + q_index

    top = tl.full([BLOCK_Q * GROUP_PAD], float("-inf"), dtype=tl.float32)
    total = tl.zeros([BLOCK_Q * GROUP_PAD], dtype=tl.float32)
    acc = tl.zeros([BLOCK_Q * GROUP_PAD, HEAD_DIM_PAD], dtype=tl.float32)
    end = cached + tl.minimum(first + BLOCK_Q, q_len)  # one past the last position any row sees
    offsets = tl.arange(0, PAGE)
    for page in range(0, tl.cdiv(end, PAGE)):
        block = tl.load(block_tables_ptr + seq * stride_bt + page)
        kv_pos = page * PAGE + offsets
        kv_rows = (block * PAGE + offsets) * stride_kslot + kv_head * stride_kh
        kv_mask = (kv_pos < end)[:, None] & dim_ok[None, :]
        k = tl.load(k_ptr + kv_rows[:, None] + dims[None, :], mask=kv_mask, other=0.0)
        if IEEE:
            scores = tl.dot(q, tl.trans(k), input_precision="ieee") * scale
        else:
            scores = tl.dot(q, tl.trans(k)) * scale
        visible = (kv_pos[None, :] <= q_pos[:, None]) & row_ok[:, None]
        scores = tl.where(visible, scores, float("-inf"))
        new_top = tl.maximum(top, tl.max(scores, 1))
        safe_top = tl.where(new_top > float("-inf"), new_top, 0.0)  # rows that see nothing yet
        p = tl.exp(scores - safe_top[:, None])
        rescale = tl.exp(top - safe_top)
        total = total * rescale + tl.sum(p, 1)
        v = tl.load(v_ptr + kv_rows[:, None] + dims[None, :], mask=kv_mask, other=0.0)
        if IEEE:
            acc = acc * rescale[:, None] + tl.dot(p.to(v.dtype), v, input_precision="ieee")
        else:
            acc = acc * rescale[:, None] + tl.dot(p.to(v.dtype), v)
        top = new_top
    result = acc / tl.where(total > 0, total, 1.0)[:, None]
    out_rows = (q_start + q_index) * stride_ot + head * stride_oh
    tl.store(
        out_ptr + out_rows[:, None] + dims[None, :],
        result.to(out_ptr.dtype.element_ty),
        mask=row_ok[:, None] & dim_ok[None, :],
    )
