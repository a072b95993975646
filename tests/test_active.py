"""clipft.active: every strategy picks distinct products, deterministically, and does what it says."""
import numpy as np
import pytest

from clipft.active import STRATEGIES, Pool, entropy_uncertainty, margin_uncertainty, product_uncertainty, select


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def blobs(n_per=40, centres=4, d=8, seed=0):
    rng = np.random.default_rng(seed)
    means = unit(rng.normal(size=(centres, d))) * 3
    x = np.concatenate([m + 0.2 * rng.normal(size=(n_per, d)) for m in means])
    return unit(x), np.repeat(np.arange(centres), n_per)


def test_uncertainty_measures():
    proba = np.array([[0.5, 0.5, 0.0], [0.9, 0.05, 0.05], [1 / 3, 1 / 3, 1 / 3]])
    assert np.allclose(margin_uncertainty(proba), [1.0, 0.15, 1.0])
    entropy = entropy_uncertainty(proba)
    assert entropy[2] == pytest.approx(1.0) and entropy[1] < entropy[0] < entropy[2]


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_each_strategy_picks_budget_distinct_products_per_seed(strategy):
    x, _ = blobs()
    proba = np.random.default_rng(1).dirichlet(np.ones(3), size=len(x))
    pool = Pool(x, {"a": proba}, labelled=x[:3])
    first = select(strategy, pool, 12, seed=5)
    assert len(first) == len(set(first.tolist())) == 12 and first.max() < len(x)
    assert np.array_equal(first, select(strategy, pool, 12, seed=5))


def test_margin_picks_the_lowest_margins_and_skips_what_does_not_apply():
    x, _ = blobs()
    rng = np.random.default_rng(0)
    top = rng.uniform(0.5, 1.0, len(x))
    proba = np.stack([top, 1 - top], axis=1)
    lid_applies = np.ones(len(x), dtype=bool)
    lid_applies[:5] = False  # these are the most uncertain, but the attribute does not apply to them
    proba[:5] = 0.5
    pool = Pool(x, {"lid": proba}, {"lid": lid_applies})
    expected = 5 + np.argsort(np.abs(2 * top[5:] - 1))[:6]  # margin |p1 - p2|, smallest first
    assert set(select("margin", pool, 6).tolist()) == set(expected.tolist())
    assert product_uncertainty(pool)[0] == 0.0  # nothing applies: nothing to ask


def test_near_duplicates_count_once():
    x, _ = blobs()
    twins = np.vstack([x, x[:10]])  # the 10 most uncertain products, each twice
    proba = np.full((len(twins), 2), [0.95, 0.05])
    proba[:10] = proba[-10:] = 0.5
    picks = select("margin", Pool(twins, {"a": proba}), 10, seed=0)
    rows = np.where(picks >= len(x), picks - len(x), picks)
    assert len(set(rows.tolist())) == 10


def test_diversity_strategies_cover_every_cluster():
    x, cluster = blobs(centres=4)
    for strategy in ("coreset", "typiclust"):
        picks = select(strategy, Pool(x), 4, seed=0)
        assert sorted(cluster[picks].tolist()) == [0, 1, 2, 3], strategy


def test_labelled_products_steer_diversity_elsewhere():
    x, cluster = blobs(centres=4)
    labelled = x[cluster < 2]
    for strategy in ("coreset", "typiclust", "weighted"):
        picks = select(strategy, Pool(x[cluster >= 2], labelled=labelled), 2, seed=0)
        assert sorted(cluster[cluster >= 2][picks].tolist()) == [2, 3], strategy


def test_bad_strategy_or_budget():
    x, _ = blobs()
    with pytest.raises(ValueError, match="strategy must be one of"):
        select("best", Pool(x), 3)
    with pytest.raises(ValueError, match="budget"):
        select("random", Pool(x), 0)
    assert len(select("coreset", Pool(x[:5]), 10)) == 5  # a budget beyond the pool takes it all
