"""Balanced batches: every batch holds the classes of an attribute in (near) equal numbers,
so rare values are seen as often as common ones.

Behaviour, tested in tests/test_sampler.py:
- An epoch is ``ceil(n_examples / batch_size)`` full batches: as many examples as the data
  holds, but drawn evenly over the classes. Common classes are subsampled; a class with fewer
  examples than its share is cycled through again, reshuffled (oversampled).
- With ``k`` classes, each batch gives every class ``batch_size // k`` places; the remaining
  ``batch_size % k`` places go to classes taken in turn from a stream of shuffled class orders,
  so within a batch two classes differ by at most one example, and over an epoch the class
  totals differ by at most one as well. With fewer places than classes, a batch holds
  ``batch_size`` distinct classes, and consecutive batches go round all of them.
- An example appears at most once in a batch unless its class has fewer examples than its
  places in that batch.
- ``min_epoch_steps`` lengthens short epochs (a few labels per class fill one batch; a few-shot
  run still takes enough steps between validations).
- The order depends only on ``(seed, epoch)``: ``set_epoch`` before each epoch. Under torchrun
  every process draws the same global batches, whatever their number, and embeds the share
  that :func:`rank_share` deals it.
"""
from __future__ import annotations

import math

import numpy as np
import torch


class _Cycler:
    """Endless stream of items, reshuffled after each full pass."""

    def __init__(self, items, rng: np.random.Generator):
        self.items = np.asarray(items)
        self.rng = rng
        self.queue: list = []

    def take(self, k: int) -> list:
        """``k`` items, all different while ``k`` allows; an item skipped to avoid a repeat stays
        at the head of the stream for the next call."""
        out: list = []
        while len(out) < k:
            chunk = out[len(out) - len(out) % len(self.items):]  # items taken in the current round
            pos = next((p for p in range(len(self.queue) - 1, -1, -1) if self.queue[p] not in chunk), None)
            if pos is None:
                self.queue = list(self.rng.permutation(self.items)) + self.queue
                continue
            out.append(self.queue.pop(pos))
        return out


class BalancedBatchSampler(torch.utils.data.Sampler):
    """Yields lists of example indices. ``labels``: one hashable class label per example."""

    def __init__(self, labels, batch_size: int, seed: int = 0, min_epoch_steps: int = 1):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        labels = np.asarray(labels)
        if len(labels) == 0:
            raise ValueError("BalancedBatchSampler needs at least one example")
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0
        self.classes, codes = np.unique(labels, return_inverse=True)
        self.members = [np.flatnonzero(codes == c) for c in range(len(self.classes))]
        self.n = len(labels)
        self.min_epoch_steps = min_epoch_steps

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return max(self.min_epoch_steps, math.ceil(self.n / self.batch_size))

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        k = len(self.classes)
        pools = [_Cycler(m, rng) for m in self.members]
        extra = _Cycler(np.arange(k), rng)
        base, remainder = divmod(self.batch_size, k)
        for _ in range(len(self)):
            counts = np.full(k, base)
            for c in extra.take(remainder):
                counts[c] += 1
            batch = [int(i) for c in range(k) for i in pools[c].take(int(counts[c]))]
            yield [batch[i] for i in rng.permutation(len(batch))]


def rank_share(labels, rank: int, world_size: int) -> np.ndarray:
    """Positions of one global batch that process ``rank`` of ``world_size`` embeds.

    The batch's positions are grouped by class (stable) and dealt out in turn, so the shares
    are disjoint, cover the batch, and each holds every class's examples to within one: each
    process's share is as balanced as the batch.
    """
    if world_size == 1:
        return np.arange(len(labels))  # one process keeps the sampler's order
    by_class = np.argsort(np.asarray(labels), kind="stable")
    return by_class[rank::world_size]
