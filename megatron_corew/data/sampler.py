"""Deterministic batches of dataset indices with an exact resume point (epoch, cursor).

A resumed run must draw the same prompts as an uninterrupted one, so the permutation of each epoch depends only on
(seed, epoch) and the position within it is part of the checkpoint.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

__all__ = ["EpochSampler"]


def epoch_seed(seed: int, epoch: int) -> int:
    """The permutation seed of ``epoch``: the seed itself for epoch 0, a hash of (seed, epoch) after it, so that
    no two (seed, epoch) pairs share an order (``seed + epoch`` made seed s epoch 1 equal seed s+1 epoch 0)."""
    if epoch == 0:
        return seed
    import hashlib

    digest = hashlib.sha256(f"epoch-order:{seed}:{epoch}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class EpochSampler:
    """Deterministic batches of item indices, epoch after epoch.

    Epoch e uses ``torch.randperm(num_items, generator=torch.Generator().manual_seed(epoch_seed(seed, e)))`` (or
    0..n-1 when ``shuffle=False``). ``drop_last=True``: every batch is full and the tail of each epoch is left out;
    ``drop_last=False``: the last batch of an epoch may be short. ``epoch`` counts completed epochs (it advances as
    soon as an epoch's last batch has been handed out) and ``cursor`` is the position within the current epoch;
    ``state_dict()``/``load_state_dict()`` carry both, so a resumed sampler continues with the identical sequence.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int = 0, shuffle: bool = True, drop_last: bool = True):
        if num_items <= 0:
            raise ValueError(f"num_items must be positive, got {num_items}")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if drop_last and batch_size > num_items:
            raise ValueError(f"batch_size {batch_size} > num_items {num_items} with drop_last=True: no full batch")
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.shuffle, self.drop_last = shuffle, drop_last
        self.epoch = 0
        self.cursor = 0
        self._perm_epoch, self._perm = None, None

    def __len__(self) -> int:
        """Batches per epoch."""
        n, b = self.num_items, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    @property
    def batches_per_epoch(self) -> int:
        return len(self)

    def permutation(self, epoch: int) -> list[int]:
        if self._perm_epoch != epoch:
            if self.shuffle:
                import torch

                g = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
                self._perm = torch.randperm(self.num_items, generator=g).tolist()
            else:
                self._perm = list(range(self.num_items))
            self._perm_epoch = epoch
        return self._perm

    def _epoch_end(self) -> int:
        return len(self) * self.batch_size if self.drop_last else self.num_items

    def next_batch(self) -> list[int]:
        perm = self.permutation(self.epoch)
        batch = perm[self.cursor : min(self.cursor + self.batch_size, self._epoch_end())]
        self.cursor += len(batch)
        if self.cursor >= self._epoch_end():
            self.epoch += 1
            self.cursor = 0
        return batch

    def peek(self, ahead: int = 0) -> list[int]:
        """The batch ``next_batch()`` returns after ``ahead`` more calls, without moving: a pipeline prefetches
        prompts this way, so the checkpointed cursor counts consumed batches only."""
        epoch, cursor = self.epoch, self.cursor
        try:
            for _ in range(ahead):
                self.next_batch()
            return self.next_batch()
        finally:
            self.epoch, self.cursor = epoch, cursor

    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "cursor": self.cursor,
            "seed": self.seed,
            "num_items": self.num_items,
            "batch_size": self.batch_size,
            "shuffle": self.shuffle,
            "drop_last": self.drop_last,
        }

    def load_state_dict(self, state: dict) -> None:
        for key in ("num_items", "seed", "shuffle"):
            if key in state and state[key] != getattr(self, key):
                raise ValueError(
                    f"sampler state has {key}={state[key]!r} but this sampler has "
                    f"{key}={getattr(self, key)!r}; the batch sequence would not continue"
                )
        epoch, cursor = int(state["epoch"]), int(state["cursor"])
        if epoch < 0 or not 0 <= cursor < self._epoch_end():
            raise ValueError(f"invalid sampler state epoch={epoch} cursor={cursor} for {self.num_items} items")
        if (
            state.get("batch_size", self.batch_size) != self.batch_size
            or state.get("drop_last", self.drop_last) != self.drop_last
        ):
            logger.warning(
                "sampler resumed with batch_size/drop_last %s/%s (saved %s/%s): same item order, "
                "different batch boundaries",
                self.batch_size,
                self.drop_last,
                state.get("batch_size"),
                state.get("drop_last"),
            )
        self.epoch, self.cursor = epoch, cursor
