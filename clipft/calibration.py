"""Confidence you can act on: temperature scaling per attribute (Guo et al. 2017), expected
calibration error, and the confidence threshold above which labels are accepted without a
person at a target precision. Plain functions of scores and labels, fitted on validation.

The threshold carries a finite-sample guarantee for a new batch of products (Learn then Test,
Angelopoulos et al. 2021, with fixed-sequence testing): with probability at least ``guarantee``
over the validation draw and the new batch, the labels auto-accepted in a new batch from the same
catalogue the size of the validation split are correct at a rate of at least the target. (Larger
batches fluctuate less, but the rounding of "(1 - target) * m errors allowed" makes the promise
exact only at that size: one of 179 products with an error rate made for 160 fails with
probability 0.046 instead of 0.025.)

Half of ``1 - guarantee`` goes to each of the two ways it can fail. The error rate p of what a
candidate threshold accepts may be larger than validation showed: the one-sided Clopper-Pearson
bound at level ``1 - (1 - guarantee) / 2`` covers that. And a batch accepting m products may by
chance hold more than ``(1 - target) * m`` errors even where p is small enough: a candidate passes
only when its bound is at most the largest p for which that happens with probability at most
``(1 - guarantee) / 2`` (m: the validation products it accepts, so a batch the size of validation).
The candidates, the confidences that accept the most confident 10%, 15%, ... 100% of the
validation products (each moved down to the smallest number allowed as many errors, see
:func:`candidate_sizes`), are tested in that order, from the first that could pass with one
error (:func:`first_tested_size`), and the last one before the first that fails is kept; the
order is fixed by the confidences alone, before any label is read, so no correction for the
number of candidates is needed. A bound on p alone (the first version) kept the target on the
test split but missed it on up to 21% of 100 random re-splits (benchmarks/precision_guarantee.py): a
test split of 1,400 products dips below the target by chance when p sits just under it."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import logging

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax
from scipy.stats import beta, binom

log = logging.getLogger(__name__)
GUARANTEE = 0.95  # the probability with which the target precision holds on a new batch of products
# The candidates, in testing order: the confidences at these coverages. Steps of 5%, not 1%:
# testing stops at the first candidate that fails, and each extra candidate is one more chance
# to stumble on a few early errors (a fine-tuned colour run stopped at 17% with steps of 1%).
COVERAGES = np.arange(10, 101, 5) / 100


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


def error_upper_bound(errors: np.ndarray, n: np.ndarray, level: float) -> np.ndarray:
    """One-sided Clopper-Pearson upper bound, at confidence ``level``, on an error rate observed
    as ``errors`` of ``n``."""
    errors, n = np.asarray(errors, dtype=float), np.asarray(n, dtype=float)
    bound = beta.ppf(level, errors + 1, np.maximum(n - errors, 1e-12))
    return np.where(errors >= n, 1.0, bound)


def batch_error_limit(n: np.ndarray, target_precision: float, level: float) -> np.ndarray:
    """Per batch size ``n``, the largest error rate p at which a batch of n accepted labels holds
    at most ``(1 - target_precision) * n`` errors with probability at least ``level``."""
    n = np.atleast_1d(np.asarray(n, dtype=int))
    allowed = np.floor((1 - target_precision) * n + 1e-9)
    low, high = np.zeros(len(n)), np.ones(len(n))
    for _ in range(40):  # bisection: binom.cdf falls as p grows; 2**-40 is far below any gap that matters
        middle = (low + high) / 2
        holds = binom.cdf(allowed, n, middle) >= level
        low, high = np.where(holds, middle, low), np.where(holds, high, middle)
    return low


def passes_guarantee(errors: np.ndarray, n: np.ndarray, target_precision: float, guarantee: float) -> np.ndarray:
    """Whether candidates with ``errors`` of ``n`` accepted validation labels are guaranteed (see
    the module docstring): both failure routes at probability ``(1 - guarantee) / 2``."""
    level = 1 - (1 - guarantee) / 2
    if target_precision >= 1:  # no finite sample shows an error rate of exactly 0
        return np.zeros(np.shape(errors), dtype=bool)
    return error_upper_bound(errors, n, level) <= batch_error_limit(n, target_precision, level)


def fewest_for_guarantee(target_precision: float, guarantee: float, errors: int = 0, most: int = 100_000) -> int:
    """How many validation products, ``errors`` of them wrong, a candidate must accept before it
    can pass (``most + 1`` when even ``most`` cannot); searched a thousand sizes at a time, smallest first."""
    for start in range(1, most + 1, 1000):
        n = np.arange(start, min(start + 1000, most + 1))
        passing = np.flatnonzero(passes_guarantee(np.full(len(n), errors), n, target_precision, guarantee))
        if len(passing):
            return int(n[passing[0]])
    return most + 1


def first_tested_size(n: int, target_precision: float, guarantee: float) -> int:
    """The fewest products the first tested candidate accepts, of ``n`` validation products:
    where the split is large enough, the fewest that can pass with one error (200 at 0.95 and
    0.95), else the fewest that can pass with none (160). Smaller candidates pass only without
    an error, and one confident error there would stop the testing however well every later
    candidate holds (photo + title category, 0.987 accurate, had its first at the 141st product)."""
    one_error = fewest_for_guarantee(target_precision, guarantee, errors=1, most=n)  # searched only as far as n
    return one_error if n >= one_error else fewest_for_guarantee(target_precision, guarantee)


def candidate_sizes(n: int, target_precision: float) -> np.ndarray:
    """How many of ``n`` validation products each candidate accepts, in testing order: the
    sizes at :data:`COVERAGES`, each moved down to the smallest size allowed as many errors in
    a batch (``(1 - target) * m`` rounded down): among sizes allowed the same number, a larger
    one is only harder to pass, and a candidate that fails by that rounding alone would stop
    the testing."""
    sizes = np.ceil(COVERAGES * n).astype(int)
    step = 1 - target_precision
    if step <= 0:
        return sizes
    allowed = np.floor(step * sizes + 1e-9)
    return np.maximum(np.ceil(allowed / step - 1e-6), 1).astype(int)


def candidate_rows(conf: np.ndarray, fewest: int, target_precision: float) -> np.ndarray:
    """The last row (of rows sorted by decreasing confidence) each candidate accepts, in testing
    order: the row that accepts each of :func:`candidate_sizes`, moved down to the last of its
    confidence (a threshold takes every row of its confidence or none); candidates that accept
    fewer than ``fewest`` rows are not tested (:func:`first_tested_size`). Chosen before any label is read."""
    last_of_value = np.flatnonzero(np.r_[conf[1:] != conf[:-1], True])
    wanted = candidate_sizes(len(conf), target_precision) - 1
    rows = np.unique(last_of_value[np.searchsorted(last_of_value, wanted)])
    return rows[rows + 1 >= fewest]


def confidence_threshold(confidence: np.ndarray, correct: np.ndarray, target_precision: float,
                         guarantee: float = GUARANTEE) -> float:
    """The lowest candidate threshold (:func:`candidate_rows`) reached, testing from the most
    confident, before the first whose accepted labels cannot be shown correct at a rate of at
    least ``target_precision`` on a new batch with probability ``guarantee`` (:func:`passes_guarantee`);
    ``inf`` (everything to review) when the first already fails."""
    order = np.argsort(-np.asarray(confidence), kind="stable")
    conf, hits = np.asarray(confidence)[order], np.asarray(correct, dtype=float)[order]
    if not len(conf):
        return float("inf")
    rows = candidate_rows(conf, first_tested_size(len(conf), target_precision, guarantee), target_precision)
    n, errors = rows + 1, rows + 1 - np.cumsum(hits)[rows]
    passes = passes_guarantee(errors, n, target_precision, guarantee)
    failed = np.flatnonzero(~passes)
    accepted = rows[: failed[0] if len(failed) else len(rows)]
    return float(conf[accepted[-1]]) if len(accepted) else float("inf")


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
    guarantee: float = GUARANTEE  # the probability with which the target precision holds
    class_thresholds: list[float] | None = None  # multi-valued attributes: per class, the probability to choose it

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> "Calibration":
        defaults = cls()
        return cls(**{k: (getattr(defaults, k) if v is None else v) for k, v in data.items()})


def _warn_no_threshold(name: str, n: int, target_precision: float, guarantee: float) -> None:
    if target_precision >= 1:
        log.warning("%s: precision 1 cannot be guaranteed from validation products: every label goes to review", name)
        return
    fewest = fewest_for_guarantee(target_precision, guarantee)
    sizes = candidate_sizes(n, target_precision)
    first = sizes[sizes >= first_tested_size(n, target_precision, guarantee)][:1]
    why = (f"at least {fewest} all correct are needed" if n < fewest or not len(first) else
           f"the first candidate tested, its {first[0]} most confident (more where confidences tie), is not "
           f"right often enough")
    log.warning("%s: %d validation products guarantee no threshold at precision %g with probability %g (%s): every "
                "label goes to review", name, n, target_precision, guarantee, why)


def calibrate(logits: np.ndarray, y: np.ndarray, target_precision: float = 0.95, guarantee: float = GUARANTEE,
              name: str = "labels") -> Calibration:
    """Temperature, the threshold guaranteed at ``target_precision`` (:func:`confidence_threshold`)
    and calibration errors from validation logits and true class indices; ``name`` (the
    attribute) names it in the warning that too few validation products guarantee nothing."""
    if not 0 < target_precision <= 1:
        raise ValueError(f"target_precision must be in (0, 1], got {target_precision}")
    if not 0 < guarantee < 1:
        raise ValueError(f"guarantee must be in (0, 1), got {guarantee}")
    temperature = fit_temperature(logits, y)
    before, after = softmax(logits, axis=1), softmax(logits / temperature, axis=1)
    confidence, correct = after.max(axis=1), after.argmax(axis=1) == y
    threshold = confidence_threshold(confidence, correct, target_precision, guarantee)
    if not np.isfinite(threshold):
        _warn_no_threshold(name, len(y), target_precision, guarantee)
    auto = confidence >= threshold
    return Calibration(temperature, threshold, target_precision, expected_calibration_error(y, before),
                       expected_calibration_error(y, after), float(auto.mean()) if len(y) else 0.0,
                       float(correct[auto].mean()) if auto.any() else float("nan"), int(len(y)), guarantee)
