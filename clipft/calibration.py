"""Confidence you can act on: temperature scaling per attribute (Guo et al. 2017), expected
calibration error, and the confidence threshold above which labels are accepted without a
person at a target precision. Plain functions of scores and labels, fitted on validation."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The temperature T > 0 minimising the negative log-likelihood of ``softmax(logits / T)``
    for the true class indices ``y`` (1.0 when there is nothing to fit on)."""
    logits = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y, dtype=int)
    if not len(y):
        return 1.0

    def nll(log_t: float) -> float:
        return float(-log_softmax(logits / np.exp(log_t), axis=1)[np.arange(len(y)), y].mean())

    return float(np.exp(minimize_scalar(nll, bounds=(-5.0, 5.0), method="bounded").x))


def expected_calibration_error(y: np.ndarray, proba: np.ndarray, n_bins: int = 15) -> float:
    """Expected calibration error of the top prediction: over equal-width confidence bins,
    the gap between accuracy and mean confidence, weighted by the share of rows in the bin."""
    if not len(y):
        return float("nan")
    confidence, correct = proba.max(axis=1), proba.argmax(axis=1) == np.asarray(y)
    bins = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    gaps = [abs(correct[bins == b].mean() - confidence[bins == b].mean()) * np.mean(bins == b)
            for b in range(n_bins) if np.any(bins == b)]
    return float(np.sum(gaps))


def confidence_threshold(confidence: np.ndarray, correct: np.ndarray, target_precision: float) -> float:
    """The lowest confidence threshold at which the labels at or above it are correct at a rate of
    at least ``target_precision``; ``inf`` (everything to review) when no threshold reaches it."""
    order = np.argsort(-np.asarray(confidence), kind="stable")
    conf, hits = np.asarray(confidence)[order], np.asarray(correct, dtype=float)[order]
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    last_of_value = np.r_[conf[1:] != conf[:-1], True]  # a threshold takes every row of its confidence
    reached = np.flatnonzero((precision >= target_precision) & last_of_value)
    return float(conf[reached[-1]]) if len(reached) else float("inf")


def risk_coverage(confidence: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(coverage, accuracy of the accepted part) when the most confident rows are accepted first."""
    order = np.argsort(-np.asarray(confidence), kind="stable")
    hits = np.asarray(correct, dtype=float)[order]
    n = np.arange(1, len(hits) + 1)
    return n / max(len(hits), 1), np.cumsum(hits) / n


@dataclass
class Calibration:
    """One attribute's calibration, fitted on validation."""

    temperature: float = 1.0
    threshold: float = float("inf")  # calibrated confidence at or above which a label is auto-accepted
    target_precision: float = 0.95
    ece_before: float = float("nan")
    ece_after: float = float("nan")
    val_coverage: float = 0.0  # share of validation auto-accepted at the threshold
    val_auto_accuracy: float = float("nan")
    n_val: int = 0
    class_thresholds: list[float] | None = None  # multi-valued attributes: per class, the probability to choose it

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> "Calibration":
        defaults = cls()
        return cls(**{k: (getattr(defaults, k) if v is None else v) for k, v in data.items()})


def calibrate(logits: np.ndarray, y: np.ndarray, target_precision: float = 0.95) -> Calibration:
    """Temperature, threshold at ``target_precision`` and calibration errors from validation
    logits and true class indices."""
    if not 0 < target_precision <= 1:
        raise ValueError(f"target_precision must be in (0, 1], got {target_precision}")
    temperature = fit_temperature(logits, y)
    before, after = softmax(logits, axis=1), softmax(logits / temperature, axis=1)
    confidence, correct = after.max(axis=1), after.argmax(axis=1) == y
    threshold = confidence_threshold(confidence, correct, target_precision)
    auto = confidence >= threshold
    return Calibration(temperature, threshold, target_precision, expected_calibration_error(y, before),
                       expected_calibration_error(y, after), float(auto.mean()) if len(y) else 0.0,
                       float(correct[auto].mean()) if auto.any() else float("nan"), int(len(y)))
