import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clipft.training.sampler import BalancedBatchSampler, rank_share

class_sizes = st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=9)


def make_labels(sizes):
    return np.repeat(np.arange(len(sizes)), sizes)


@settings(max_examples=150, deadline=None)
@given(sizes=class_sizes, batch_size=st.integers(min_value=1, max_value=33), seed=st.integers(0, 3))
def test_batches_are_balanced(sizes, batch_size, seed):
    labels = make_labels(sizes)
    sampler = BalancedBatchSampler(labels, batch_size, seed=seed)
    batches = list(sampler)
    k = len(sizes)
    assert len(batches) == len(sampler) == math.ceil(len(labels) / batch_size)
    totals = Counter()
    for batch in batches:
        assert len(batch) == batch_size
        counts = Counter(labels[batch])
        per_class = [counts.get(c, 0) for c in range(k)]
        assert max(per_class) - min(per_class) <= 1  # balanced within the batch
        if batch_size < k:
            assert len(counts) == batch_size  # distinct classes
        for c, n in counts.items():
            repeats = max(Counter(i for i in batch if labels[i] == c).values())
            # an example repeats in a batch only when its class is smaller than its places there
            assert repeats == 1 or sizes[c] < n
        totals.update(counts)
    epoch_totals = [totals.get(c, 0) for c in range(k)]
    assert max(epoch_totals) - min(epoch_totals) <= 1  # balanced over the epoch


@settings(max_examples=50, deadline=None)
@given(sizes=class_sizes, batch_size=st.integers(1, 16))
def test_small_classes_are_cycled_without_repeats_until_exhausted(sizes, batch_size):
    labels = make_labels(sizes)
    stream = [i for batch in BalancedBatchSampler(labels, batch_size, seed=1) for i in batch]
    for c, size in enumerate(sizes):
        seen = [i for i in stream if labels[i] == c]
        # every example of a class is drawn before any is drawn twice
        assert len(set(seen)) == min(len(seen), size)


def test_order_depends_on_seed_and_epoch_only():
    labels = make_labels([30, 5, 12])
    a = BalancedBatchSampler(labels, 8, seed=0)
    b = BalancedBatchSampler(labels, 8, seed=0)
    assert list(a) == list(b)
    b.set_epoch(1)
    assert list(a) != list(b)
    a.set_epoch(1)
    assert list(a) == list(b)
    assert list(BalancedBatchSampler(labels, 8, seed=1)) != list(BalancedBatchSampler(labels, 8, seed=0))


def test_rare_class_is_seen_as_often_as_common_ones():
    labels = np.array(["common"] * 95 + ["rare"] * 5)
    counts = Counter(labels[i] for batch in BalancedBatchSampler(labels, 10) for i in batch)
    assert counts == {"common": 50, "rare": 50}


def test_bad_arguments():
    with pytest.raises(ValueError):
        BalancedBatchSampler([], 4)
    with pytest.raises(ValueError):
        BalancedBatchSampler([1, 2], 0)


def test_min_epoch_steps_lengthens_a_few_shot_epoch_and_stays_balanced():
    labels = np.repeat(["a", "b", "c"], 2)
    sampler = BalancedBatchSampler(labels, batch_size=6, seed=0, min_epoch_steps=5)
    batches = list(sampler)
    assert len(sampler) == len(batches) == 5
    for batch in batches:
        assert sorted(np.unique(labels[batch], return_counts=True)[1]) == [2, 2, 2]
    assert len(BalancedBatchSampler(np.repeat(["a", "b"], 50), batch_size=10, min_epoch_steps=5)) == 10


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=1, max_size=40), st.integers(1, 4))
def test_rank_shares_are_disjoint_cover_the_batch_and_stay_balanced(labels, world_size):
    labels = np.array(labels)
    shares = [rank_share(labels, r, world_size) for r in range(world_size)]
    assert sorted(np.concatenate(shares).tolist()) == list(range(len(labels)))
    for c in np.unique(labels):
        counts = [int(np.sum(labels[s] == c)) for s in shares]
        assert max(counts) - min(counts) <= 1
