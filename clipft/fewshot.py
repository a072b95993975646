"""Few-shot classifiers on cached embeddings that keep the zero-shot classifier and add what the
labelled examples say, in closed form (seconds on a CPU, no training loop):

- :class:`GDA`: Gaussian discriminant analysis, class means of the labelled embeddings and one
  shared covariance shrunk towards a multiple of the identity (Wang et al., ICML 2024, "A
  hard-to-beat baseline for training-free CLIP-based adaptation").
- :class:`TipAdapter`: a key-value cache of the labelled embeddings whose affinities vote for their
  labels (Zhang et al., ECCV 2022, "Tip-Adapter", its training-free form).

Either one's scores are blended with the zero-shot scores (:func:`fit_blend`): both standardised,
then ``(1 - w) * zero-shot + w * adapter``, with ``w`` and the adapter's own parameter chosen on
validation, as both papers do. ``w = 0`` is the zero-shot classifier itself, so few labels that
teach nothing cost nothing on validation. Embeddings are unit rows (n, d); labels class indices.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BLEND_WEIGHTS = tuple(np.round(np.linspace(0, 1, 11), 2).tolist())
SHRINKAGES = (0.2, 0.5, 0.8, 1.0)  # GDA: share of the identity in the covariance
SHARPNESSES = (1.0, 3.0, 5.5, 10.0)  # Tip-Adapter: beta, how fast affinity falls with distance


def _without_empty_classes(scores: np.ndarray, present: np.ndarray) -> np.ndarray:
    """A class with no labelled example gets the mean score of the others: the adapter is silent
    on it and the zero-shot side decides."""
    scores = scores.copy()
    scores[:, ~present] = scores[:, present].mean(axis=1, keepdims=True)
    return scores


class GDA:
    """Linear discriminant: ``x . P mu_k - mu_k . P mu_k / 2 + log prior_k`` with P the inverse of
    the shared covariance ``(1 - shrinkage) S + shrinkage * (trace(S) / d) I``. With one example per
    class S is zero and the covariance of all the labelled embeddings sets the scale instead."""

    def __init__(self, shrinkage: float = 0.5):
        self.shrinkage = shrinkage

    def fit(self, X: np.ndarray, y: np.ndarray, n_classes: int) -> "GDA":
        X, y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=int)
        counts = np.bincount(y, minlength=n_classes)
        self.present_ = counts > 0
        means = np.zeros((n_classes, X.shape[1]))
        np.add.at(means, y, X)
        means[self.present_] /= counts[self.present_, None]
        residuals = X - means[y]
        within = residuals.T @ residuals / len(X)
        scale = np.trace(within) / X.shape[1]
        if scale <= 1e-12:
            scale = max(float(np.trace(np.cov(X.T, bias=True))) / X.shape[1], 1e-6) if len(X) > 1 else 1.0
        covariance = (1 - self.shrinkage) * within + self.shrinkage * scale * np.eye(X.shape[1])
        self.coef_ = np.linalg.solve(covariance, means.T).T
        self.intercept_ = -0.5 * np.einsum("kd,kd->k", self.coef_, means) + np.log((counts + 1) / (len(y) + n_classes))
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        return _without_empty_classes(np.asarray(X, dtype=np.float64) @ self.coef_.T + self.intercept_, self.present_)


class TipAdapter:
    """Scores ``exp(-sharpness * (1 - x . key)) @ one_hot(labels)``: each labelled embedding (a key)
    votes for its class with its affinity to the product."""

    def __init__(self, sharpness: float = 5.5):
        self.sharpness = sharpness

    def fit(self, X: np.ndarray, y: np.ndarray, n_classes: int) -> "TipAdapter":
        self.keys_ = np.asarray(X, dtype=np.float64)
        self.values_ = np.eye(n_classes)[np.asarray(y, dtype=int)]
        self.present_ = self.values_.sum(axis=0) > 0
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        affinity = np.exp(-self.sharpness * (1 - np.asarray(X, dtype=np.float64) @ self.keys_.T))
        return _without_empty_classes(affinity @ self.values_, self.present_)


ADAPTERS = {"gda": (GDA, SHRINKAGES), "tip": (TipAdapter, SHARPNESSES)}


@dataclass
class Blend:
    """Zero-shot scores and an adapter's, each divided by its spread on validation, mixed with
    weight ``weight`` on the adapter."""

    adapter: GDA | TipAdapter
    weight: float
    zero_shot_scale: float
    adapter_scale: float

    def decision_function(self, X: np.ndarray, zero_shot: np.ndarray) -> np.ndarray:
        return self.mix(zero_shot, self.adapter.decision_function(X))

    def mix(self, zero_shot: np.ndarray, own: np.ndarray) -> np.ndarray:
        return (1 - self.weight) * zero_shot / self.zero_shot_scale + self.weight * own / self.adapter_scale


def fit_blend(kind: str, X: np.ndarray, y: np.ndarray, n_classes: int, X_val: np.ndarray,
              zero_shot_val: np.ndarray, y_val: np.ndarray) -> Blend:
    """The adapter ``kind`` (``gda`` or ``tip``) fitted on the labelled ``X, y``, its parameter and
    blend weight those most accurate on validation (first best: the lowest weight)."""
    if kind not in ADAPTERS:
        raise ValueError(f"adapter must be one of {', '.join(ADAPTERS)}, got {kind!r}")
    make, values = ADAPTERS[kind]
    zero_shot_scale = float(np.std(zero_shot_val)) or 1.0
    best, best_accuracy = None, -1.0
    for value in values:
        adapter = make(value).fit(X, y, n_classes)
        own = adapter.decision_function(X_val)
        for weight in BLEND_WEIGHTS:
            blend = Blend(adapter, weight, zero_shot_scale, float(np.std(own)) or 1.0)
            accuracy = float(np.mean(blend.mix(zero_shot_val, own).argmax(axis=1) == y_val))
            if accuracy > best_accuracy:
                best, best_accuracy = blend, accuracy
    return best
