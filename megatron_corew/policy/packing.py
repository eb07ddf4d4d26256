"""Packed micro-batches and the token-balanced split of a step's sequences over DP ranks and micro-batches.

A packed micro-batch is one row of concatenated sequences with per-sequence boundaries (``cu_seqlens``), so no
token is padding; the model sees it as megatron's THD format (:mod:`megatron_corew.policy.model_builder`).
The split gives every data-parallel rank about the same number of tokens and the same number of micro-batches
(pipeline parallelism runs one schedule over all ranks of a stage).
"""

from __future__ import annotations

import heapq
import math


def lpt_partition(lengths: list[int], parts: int, items: list[int] | None = None) -> list[list[int]]:
    """Greedy longest-processing-time split of ``items`` (indices into ``lengths``) into ``parts`` lists of
    near-equal total length: longest first, each to the currently lightest part (ties: the lower part index).
    Each part keeps its items in ascending index order so that the result does not depend on ties in sorting."""
    items = list(range(len(lengths))) if items is None else list(items)
    heap = [(0, p) for p in range(parts)]
    out: list[list[int]] = [[] for _ in range(parts)]
    for i in sorted(items, key=lambda j: (-lengths[j], j)):
        load, p = heapq.heappop(heap)
        out[p].append(i)
        heapq.heappush(heap, (load + lengths[i], p))
    return [sorted(part) for part in out]


def _bins_for(lengths: list[int], items: list[int], budget: int, at_least: int) -> list[list[int]]:
    """The fewest (>= at_least) LPT bins of ``items`` with every bin under ``budget`` tokens (a single sequence
    longer than the budget gets a bin of its own)."""
    total = sum(lengths[i] for i in items)
    n = max(at_least, math.ceil(total / budget) if budget else 1, 1)
    while True:
        bins = lpt_partition(lengths, n, items)
        if all(len(b) <= 1 or sum(lengths[i] for i in b) <= budget for b in bins) or n >= max(len(items), 1):
            return bins
        n += 1


def balanced_microbatches(lengths: list[int], dp: int, budget: int) -> list[list[list[int]]]:
    """``[rank][micro-batch] -> sample indices``: sequences split over ``dp`` ranks by tokens (LPT), then each
    rank's share into token-balanced micro-batches of at most ``budget`` tokens, the same count on every rank.
    A rank with fewer sequences than that count gets empty micro-batches (the trainer runs them as one pad token)."""
    ranks = lpt_partition(lengths, dp)
    count = max(len(_bins_for(lengths, r, budget, 1)) for r in ranks)
    while True:
        per_rank = [_bins_for(lengths, r, budget, count) for r in ranks]
        new = max(len(b) for b in per_rank)
        if new == count:
            break
        count = new
    for bins in per_rank:  # the fewest items in a rank may leave some bins empty: keep them, in place
        bins.sort(key=lambda b: (-sum(lengths[i] for i in b), b))
    return per_rank


def imbalance(loads: list[int]) -> float:
    """max / mean of per-rank token counts (1.0 is perfect balance)."""
    mean = sum(loads) / max(len(loads), 1)
    return max(loads) / mean if mean else 1.0


def pack_layout(lengths: list[int], multiple: int = 1) -> dict:
    """The packed row for sequences of ``lengths``: ``cu_seqlens`` (boundaries, with one pad segment to make the
    total a multiple of ``multiple``), per-token ``positions`` restarting at 0 in each sequence, and ``offsets``
    (where each sequence starts in the row)."""
    cu = [0]
    for n in lengths:
        cu.append(cu[-1] + n)
    total = cu[-1]
    padded = math.ceil(max(total, 1) / multiple) * multiple  # an empty micro-batch runs as pad tokens
    if padded > total:
        cu.append(padded)
    positions: list[int] = []
    for a, b in zip(cu[:-1], cu[1:]):
        positions.extend(range(b - a))
    return {"cu_seqlens": cu, "positions": positions, "offsets": cu[: len(lengths)], "total": padded}
