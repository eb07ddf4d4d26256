"""Attention over a packed (THD) row without Transformer Engine: sequences of similar length attend as one padded
batch, so a micro-batch of many sequences costs a few attention calls instead of one per sequence or length.

Only attention is padded (inside a bucket, up to the bucket's longest sequence); embeddings, projections, MLPs and
the logits still run on the packed tokens alone. A query at position p of a right-padded sequence attends to keys
0..p under the causal mask, which are all that sequence's own tokens, so the result is per-sequence attention up
to float rounding. Buckets come from an exact dynamic programme over the sorted distinct lengths that minimises
(query-key pairs x heads computed) + (a fixed cost per attention call, ``CALL_PAIRS``): equal lengths always share
a bucket, near-equal ones share it when the padding costs less than another call. A block-diagonal mask over the
whole row would compute (row length)^2 pairs, which stops paying as soon as a row holds more than a few sequences
(a 7,000-token row of 128 sequences: ~60x the pairs of the buckets). On GPU, TE's THD attention (cu_seqlens) is
used instead (:func:`megatron_corew.policy.model_builder.build_layer_spec`).
"""

from __future__ import annotations

import functools

import torch

# The cost of one more attention call in query-key pairs x heads: forward + backward of megatron's local
# DotProductAttention took ~0.4 ms per call plus ~11-16 ns per pair-head (fp32, one thread, 2-core x86 CPU, batches
# of 1 x 1 up to 64 x 64 sequences of 64 tokens); longer sequences cost more per pair and are rarely worth padding.
CALL_PAIRS = 32768


def buckets(lengths: list[int], heads: int = 1, call_pairs: int = CALL_PAIRS) -> list[list[int]]:
    """Segments (indices into ``lengths``) grouped into padded attention batches: the grouping of the sorted
    lengths into contiguous runs with the least sum over runs of ``count x longest^2 x heads + call_pairs``.
    Each bucket lists its segments in index order; buckets go from short to long."""
    distinct = sorted(set(lengths))
    count = {n: 0 for n in distinct}
    for n in lengths:
        count[n] += 1
    m = len(distinct)
    prefix = [0]
    for n in distinct:
        prefix.append(prefix[-1] + count[n])
    best, cut = [0] + [None] * m, [0] * (m + 1)
    for j in range(1, m + 1):  # best[j]: the cheapest grouping of the j shortest distinct lengths
        width = distinct[j - 1]
        for i in range(j):
            cost = best[i] + (prefix[j] - prefix[i]) * width * width * heads + call_pairs
            if best[j] is None or cost < best[j]:
                best[j], cut[j] = cost, i
    runs, j = [], m
    while j:
        runs.append(set(distinct[cut[j] : j]))
        j = cut[j]
    return [[k for k, n in enumerate(lengths) if n in run] for run in reversed(runs)]


@functools.lru_cache(maxsize=32)
def _plan(cu_seqlens: tuple[int, ...], heads: int, device: torch.device):
    """Per bucket: (width, gather index [width * count] into the row, rows of the bucket's output that are real
    tokens); and the permutation from the buckets' real rows back to row order. Cached: every layer, and the
    backward's recomputation, reuse the plan of the micro-batch."""
    starts, lengths = list(cu_seqlens[:-1]), [b - a for a, b in zip(cu_seqlens[:-1], cu_seqlens[1:])]
    plan, order = [], []
    for bucket in buckets(lengths, heads):
        width = max(lengths[k] for k in bucket)
        start = torch.tensor([starts[k] for k in bucket])
        length = torch.tensor([lengths[k] for k in bucket])
        pos = torch.arange(width).unsqueeze(1)  # [width, count]: padding repeats the sequence's last token
        gather = (start + torch.minimum(pos, length - 1)).reshape(-1)
        real = (pos < length).reshape(-1)
        plan.append((width, len(bucket), gather.to(device), real.nonzero().squeeze(1).to(device)))
        order.append((start + pos).reshape(-1)[real])
    inverse = torch.argsort(torch.cat(order))
    return plan, inverse.to(device)


def packed_attention(attend, query, key, value, cu_seqlens: list[int]):
    """``attend(q, k, v)`` ([s, b, heads, dim] in, [s, b, hidden] out, causal) over the packed row ``query`` /
    ``key`` / ``value`` ([t, heads, dim]) split at ``cu_seqlens``; returns [t, 1, hidden]."""
    plan, inverse = _plan(tuple(cu_seqlens), query.shape[1], query.device)
    if len(plan) == 1 and plan[0][1] == 1:  # one sequence: no gather
        return attend(query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1))
    outs = []
    for width, count, gather, real in plan:
        q, k, v = (x.index_select(0, gather).view(width, count, *x.shape[1:]) for x in (query, key, value))
        out = attend(q, k, v)
        outs.append(out.reshape(width * count, out.shape[-1]).index_select(0, real))
    return torch.cat(outs).index_select(0, inverse).unsqueeze(1)
