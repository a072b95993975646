import numpy as np
import pytest
from scipy.special import softmax

from scipy.stats import binom

from clipft.calibration import (Calibration, batch_error_limit, calibrate, confidence_threshold,
                                expected_calibration_error, fit_temperature, risk_coverage)


def sampled(temperature, n=4000, k=5, seed=0):
    """Logits whose labels are drawn from softmax(logits / temperature): that temperature calibrates them."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=3.0, size=(n, k))
    proba = softmax(logits / temperature, axis=1)
    y = np.array([rng.choice(k, p=p) for p in proba])
    return logits, y


def test_temperature_scaling_recovers_the_temperature_and_lowers_the_calibration_error():
    logits, y = sampled(2.0)
    assert fit_temperature(logits, y) == pytest.approx(2.0, rel=0.1)
    result = calibrate(logits, y)
    assert result.ece_after < result.ece_before / 3
    assert result.ece_before == pytest.approx(expected_calibration_error(y, softmax(logits, axis=1)))


def test_the_threshold_is_guaranteed_and_the_target_holds_on_fresh_products():
    for target in (0.7, 0.85):
        logits, y = sampled(1.5, seed=1)
        result = calibrate(logits, y, target)
        proba = softmax(logits / result.temperature, axis=1)
        confidence, correct = proba.max(axis=1), proba.argmax(axis=1) == y
        auto = confidence >= result.threshold
        assert correct[auto].mean() >= target and result.val_coverage == pytest.approx(auto.mean())
        assert result.guarantee == 0.95 and 0 < result.val_coverage < 1
        # on new products from the same source, the auto-accepted part keeps the target
        fresh, fresh_y = sampled(1.5, n=20000, seed=2)
        fresh_proba = softmax(fresh / result.temperature, axis=1)
        accepted = fresh_proba.max(axis=1) >= result.threshold
        assert (fresh_proba.argmax(axis=1) == fresh_y)[accepted].mean() >= target


def test_the_guarantee_holds_over_many_validation_draws_on_new_batches():
    """Over 200 draws of 300 validation products and a new batch of 300, the labels accepted in
    the batch fall below the target in at most about 1 - guarantee of them."""
    rng = np.random.default_rng(0)
    misses = population_misses = 0
    for _ in range(200):
        conf = rng.random(300)
        threshold = confidence_threshold(conf, rng.random(300) < conf, 0.9, 0.9)
        # P(correct | confidence c) = c: the accepted part's precision is the mean of c above the threshold
        population_misses += np.isfinite(threshold) and (1 + threshold) / 2 < 0.9
        batch = rng.random(300)
        accepted = batch >= threshold
        misses += accepted.any() and (rng.random(accepted.sum()) < batch[accepted]).mean() < 0.9
    assert misses / 200 <= 0.1 and population_misses / 200 <= 0.1


def test_the_batch_limit_is_the_largest_error_rate_whose_batches_keep_the_target():
    for n, target in ((160, 0.95), (300, 0.95), (57, 0.8)):
        limit = batch_error_limit(n, target, 0.975)[0]
        allowed = int((1 - target) * n + 1e-9)
        assert binom.cdf(allowed, n, limit) >= 0.975 > binom.cdf(allowed, n, limit + 1e-4)


def test_a_target_of_one_is_never_guaranteed(caplog):
    conf = np.full(500, 0.99)
    assert confidence_threshold(conf, np.ones(500, dtype=bool), 1.0) == float("inf")
    logits, y = sampled(0.2, n=500, seed=4)
    assert calibrate(logits, y, 1.0, name="lid").threshold == float("inf")
    assert "lid: precision 1 cannot be guaranteed" in caplog.text


def test_too_few_validation_products_send_everything_to_review(caplog):
    logits, y = sampled(1.0, n=30, seed=3)
    result = calibrate(logits, y, 0.95, name="sleeve")
    assert result.threshold == float("inf") and result.val_coverage == 0
    assert "sleeve: 30 validation products guarantee no threshold" in caplog.text and "at least 160" in caplog.text


def test_threshold_edge_cases_and_ties():
    assert confidence_threshold(np.array([0.9, 0.8]), np.array([False, False]), 0.9) == float("inf")
    # 600 right answers at 0.9 pass the bound for a 0.9 target; 400 ties at 0.7, half of them
    # wrong, do not: a threshold takes every row of its confidence or none
    conf = np.r_[np.full(600, 0.9), np.full(400, 0.7)]
    hit = np.r_[np.ones(600, dtype=bool), np.arange(400) % 2 == 0]
    assert confidence_threshold(conf, hit, 0.9) == 0.9
    # the 1,000 accepted at 0.7 are 80% right: enough for a 0.7 target on a new batch, not for 0.75
    assert confidence_threshold(conf, hit, 0.7) == 0.7 and confidence_threshold(conf, hit, 0.75) == 0.9
    conf, hit = np.array([0.9, 0.7, 0.7, 0.5]), np.array([True, True, False, False])
    coverage, accuracy = risk_coverage(conf, hit)
    np.testing.assert_allclose(coverage, [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(accuracy, [1.0, 1.0, 2 / 3, 0.5])
    assert Calibration.from_dict(Calibration().to_dict()).threshold == float("inf")
    with pytest.raises(ValueError, match="target_precision"):
        calibrate(np.zeros((2, 2)), np.array([0, 1]), 1.5)


def test_candidates_sit_where_a_batch_is_allowed_one_more_error():
    from clipft.calibration import candidate_sizes

    sizes = candidate_sizes(1382, 0.95)
    assert sizes[0] == 120 and np.all(sizes % 20 == 0)  # 5% of 20 products is one error: no size wasted on rounding
    assert np.all(np.diff(sizes) >= 0) and sizes[-1] <= 1382
    assert list(candidate_sizes(100, 1.0)[:3]) == [10, 15, 20]  # a target of 1 allows no error at any size


def test_a_few_early_errors_do_not_stop_the_testing_where_later_candidates_hold():
    """Two errors among the 235 most confident of 1,382 validation products, then the error rate
    of a good colour model: a 1%-step sequence stopped at 17% coverage on such a run."""
    n = 1382
    correct = np.ones(n, dtype=bool)
    correct[[226, 231, 377]] = False
    correct[np.arange(500, n, 40)] = False  # about 2.5% errors further down
    correct[np.arange(1300, n, 2)] = False  # and the least confident are mostly wrong
    confidence = np.linspace(1.0, 0.5, n)
    threshold = confidence_threshold(confidence, correct, 0.95, 0.95)
    accepted = confidence >= threshold
    assert accepted.mean() >= 0.85 and correct[accepted].mean() >= 0.95


def test_one_confident_error_before_the_first_tested_candidate_does_not_stop_the_testing(caplog):
    """Photo + title category on the fashion catalogue: 0.987 accurate on 1,192 validation
    products with its first error at the 141st most confident; starting at the 160 products
    that can pass only without an error, it auto-accepted nothing."""
    from clipft.calibration import first_tested_size

    n = 1192
    correct = np.ones(n, dtype=bool)
    correct[[140, 600, 900]] = False
    correct[np.arange(1000, n, 8)] = False
    confidence = np.linspace(1.0, 0.5, n)
    assert first_tested_size(n, 0.95, 0.95) == 200 and first_tested_size(180, 0.95, 0.95) == 160
    threshold = confidence_threshold(confidence, correct, 0.95, 0.95)
    assert (confidence >= threshold).mean() >= 0.9
    correct[[150, 190]] = False  # two errors before 200 products are more than it can pass with
    assert confidence_threshold(confidence, correct, 0.95, 0.95) == float("inf")
    logits = np.c_[np.linspace(6, 0, n), np.zeros(n)]  # the same order of confidence, as scores
    assert calibrate(logits, (~correct).astype(int), 0.95, name="category").threshold == float("inf")
    assert "category: 1192 validation products" in caplog.text and "its 220 most confident" in caplog.text  # 200 is no candidate size of 1,192
