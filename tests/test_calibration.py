import numpy as np
import pytest
from scipy.special import softmax

from clipft.calibration import (Calibration, calibrate, confidence_threshold, expected_calibration_error,
                                fit_temperature, risk_coverage)


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


def test_the_threshold_is_the_lowest_that_reaches_the_target_precision_on_validation():
    logits, y = sampled(1.5, seed=1)
    for target in (0.6, 0.8, 0.95):
        result = calibrate(logits, y, target)
        proba = softmax(logits / result.temperature, axis=1)
        confidence, correct = proba.max(axis=1), proba.argmax(axis=1) == y
        auto = confidence >= result.threshold
        assert correct[auto].mean() >= target  # the target is met on validation
        lower = confidence[confidence < result.threshold]
        if len(lower):  # and any lower threshold misses it
            assert correct[confidence >= lower.max()].mean() < target
        assert result.val_coverage == pytest.approx(auto.mean())


def test_threshold_edge_cases_and_ties():
    assert confidence_threshold(np.array([0.9, 0.8]), np.array([False, False]), 0.9) == float("inf")
    # Two rows share the confidence 0.7: a threshold takes both or neither.
    conf, hit = np.array([0.9, 0.7, 0.7, 0.5]), np.array([True, True, False, False])
    assert confidence_threshold(conf, hit, 0.7) == 0.9  # taking one 0.7 row alone would reach 1.0
    assert confidence_threshold(conf, hit, 0.6) == 0.7
    assert confidence_threshold(conf, hit, 0.5) == 0.5  # the lowest threshold that reaches it
    coverage, accuracy = risk_coverage(conf, hit)
    np.testing.assert_allclose(coverage, [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(accuracy, [1.0, 1.0, 2 / 3, 0.5])
    assert Calibration.from_dict(Calibration().to_dict()).threshold == float("inf")
    with pytest.raises(ValueError, match="target_precision"):
        calibrate(np.zeros((2, 2)), np.array([0, 1]), 1.5)
