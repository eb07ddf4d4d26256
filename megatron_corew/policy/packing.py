"""Micro-batch layouts (padded rows, packed rows) and the token-balanced split of a step's sequences over DP ranks and micro-batches.

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


def _as_list(values) -> list:
    """A Python list of numbers from a list or a tensor."""
    return values.tolist() if hasattr(values, "tolist") else list(values)


def _fill(batch, indices, weights, rows: int, width: int, starts: list[int]) -> dict:
    """Token tensors of shape [rows, width] for ``batch`` (records with prompt_ids, response_ids, advantage,
    rollout_logprobs): sequence k starts at flat offset ``starts[k]``; its response positions (position t predicts
    token t+1) carry mask, advantage and the token weight ``weights[indices[k]]``."""
    import torch

    from megatron_corew.policy import parallel

    n = rows * width
    # built as Python lists and turned into tensors once: one small tensor per sample costs more than the copy
    tokens, labels = [0] * n, [0] * n
    mask, adv, weight, rollout_logp = [0.0] * n, [0.0] * n, [0.0] * n, [0.0] * n
    # an empty micro-batch (a rank with fewer sequences than micro-batches) has all of them: zeros, masked out
    has_rollout_logp = all(s.rollout_logprobs is not None for s in batch)
    old_logp = torch.zeros(n, dtype=torch.float32)  # pi_old of several steps per rollout (policy/multistep.py)
    has_old_logp = all(getattr(s, "old_logprobs", None) is not None for s in batch)
    first = []
    for k, (s, i) in enumerate(zip(batch, indices)):
        seq = _as_list(s.prompt_ids) + _as_list(s.response_ids)
        o = starts[k]
        tokens[o : o + len(seq)] = seq
        labels[o : o + len(seq) - 1] = seq[1:]
        a, b = o + len(s.prompt_ids) - 1, o + len(seq) - 1
        first.append(a)
        mask[a:b], adv[a:b], weight[a:b] = [1.0] * (b - a), [float(s.advantage)] * (b - a), [weights[i]] * (b - a)
        if has_rollout_logp:
            rollout_logp[a:b] = _as_list(s.rollout_logprobs)
        if has_old_logp:
            old_logp[a:b] = torch.as_tensor(s.old_logprobs, dtype=torch.float32)
    tokens, labels = torch.tensor(tokens, dtype=torch.long), torch.tensor(labels, dtype=torch.long)
    mask, adv, weight, rollout_logp = (torch.tensor(v, dtype=torch.float32) for v in (mask, adv, weight, rollout_logp))
    dev = parallel.device()
    shape = (rows, width)
    return {
        "tokens": tokens.view(shape).to(dev),
        "labels": labels.view(shape).to(dev),
        "mask": mask.view(shape).to(dev),
        "adv": adv.view(shape).to(dev),
        "weight": weight.view(shape).to(dev),
        "rollout_logp": rollout_logp.view(shape).to(dev) if has_rollout_logp else None,
        "old_logp": old_logp.view(shape).to(dev) if has_old_logp else None,
        "rows": mask.nonzero().squeeze(1).to(dev),  # flat response positions: the only logits the loss needs
        "indices": list(indices),
        "first": first,  # flat position predicting each sample's first response token
        "lengths": [len(s.response_ids) for s in batch],
    }


def padded_microbatch(batch, indices, weights, multiple: int = 1) -> dict:
    """Right-padded rows, one per sequence (megatron's plain causal attention), ``multiple`` | width (sequence
    parallelism scatters the sequence dimension over the TP ranks). An empty batch runs as one row of pad tokens."""
    import torch

    width = math.ceil(max((s.length for s in batch), default=1) / multiple) * multiple
    rows = max(len(batch), 1)
    mb = _fill(batch, indices, weights, rows, width, [r * width for r in range(len(batch))])
    mb["positions"] = torch.arange(width, device=mb["tokens"].device).unsqueeze(0).expand(rows, -1)
    mb["packed"] = None
    return mb


def packed_microbatch(batch, indices, weights, multiple: int = 1) -> dict:
    """One row of whole sequences with THD boundaries (``mb["packed"]``, megatron's ``PackedSeqParams``)."""
    import torch

    from megatron_corew.policy import model_builder

    layout = pack_layout([s.length for s in batch], multiple)
    mb = _fill(batch, indices, weights, 1, layout["total"], layout["offsets"])
    dev = mb["tokens"].device
    mb["positions"] = torch.tensor(layout["positions"], device=dev).unsqueeze(0)
    mb["packed"] = model_builder.packed_seq_params(layout["cu_seqlens"], dev)
    return mb
