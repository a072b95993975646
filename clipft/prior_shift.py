"""The class frequencies of the catalogue being labelled, estimated without labels (EM prior
adaptation, Saerens, Latinne & Decaestecker 2002). A run's probabilities assume the class
frequencies of its own split; a catalogue that sells more summer clothes than the one it learnt
from gets probabilities re-weighted to its own frequencies, which EM finds from the run's
posteriors alone."""
from __future__ import annotations

import numpy as np


def split_prior(y: np.ndarray, n_classes: int) -> np.ndarray:
    """The class frequencies of a labelled split (class indices), add-one smoothed."""
    counts = np.bincount(np.asarray(y, dtype=int), minlength=n_classes).astype(float)
    return (counts + 1) / (counts.sum() + n_classes)


def reweighted(proba: np.ndarray, source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Posteriors under the ``source`` class prior turned into posteriors under ``target``."""
    weighted = proba * (np.asarray(target) / np.asarray(source))[None, :]
    return weighted / weighted.sum(axis=1, keepdims=True).clip(min=1e-12)


def em_prior(proba: np.ndarray, source: np.ndarray, max_iter: int = 200, tol: float = 1e-6) -> np.ndarray:
    """The class prior of the products whose posteriors (under ``source``) are ``proba``: the
    fixed point of prior = mean of the posteriors re-weighted to that prior."""
    prior = np.asarray(source, dtype=float)
    if not len(proba):
        return prior
    for _ in range(max_iter):
        updated = reweighted(proba, source, prior).mean(axis=0)
        if np.abs(updated - prior).max() < tol:
            return updated
        prior = updated
    return prior


STRENGTHS = (0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0)  # how much of the products' own evidence adapted scores keep


def _evidence(logits: np.ndarray, log_source: np.ndarray, strength: float) -> np.ndarray:
    """Posteriors under a uniform prior: the prior the scores assume (``log_source``) taken out
    and what is left raised to ``strength``."""
    evidence = strength * (np.asarray(logits, dtype=np.float64) - np.asarray(log_source)[None, :])
    proba = np.exp(evidence - evidence.max(axis=1, keepdims=True))
    return proba / proba.sum(axis=1, keepdims=True)


def shared_prior(logits: list[np.ndarray], log_source: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """EM's class prior (:func:`em_prior`) of all the products of ``logits`` together: one
    estimate for products of one catalogue, however they were split."""
    proba = _evidence(np.concatenate(logits), log_source, strength)
    uniform = np.full(proba.shape[1], 1 / proba.shape[1])
    return em_prior(proba, uniform)


def adapted_scores(logits: np.ndarray, log_source: np.ndarray, strength: float,
                   prior: np.ndarray | None = None) -> np.ndarray:
    """Log posteriors under ``prior`` (by default the one these products' scores imply,
    :func:`shared_prior`): the prior the scores assume (``log_source``, per class) taken out, the
    evidence left raised to ``strength`` (below 1 for a few-shot classifier that is surer than it
    should be), and the new prior put in."""
    proba = _evidence(logits, log_source, strength)
    prior = shared_prior([logits], log_source, strength) if prior is None else prior
    uniform = np.full(proba.shape[1], 1 / proba.shape[1])
    return np.log(reweighted(proba, uniform, prior).clip(min=1e-300))


def fit_strength(val_logits: np.ndarray, y_val: np.ndarray, log_source: np.ndarray,
                 unlabelled: list[np.ndarray] = ()) -> float | None:
    """The :data:`STRENGTHS` value whose EM-adapted scores are the most accurate on the
    validation products, the prior estimated on them and the ``unlabelled`` products of the same
    catalogue together, without labels; None when the scores as they are do at least as well, so
    adapting is chosen only where it helps there."""
    best, best_accuracy = None, float(np.mean(np.argmax(val_logits, axis=1) == y_val))
    for strength in STRENGTHS:
        prior = shared_prior([val_logits, *unlabelled], log_source, strength)
        accuracy = float(np.mean(adapted_scores(val_logits, log_source, strength, prior).argmax(axis=1) == y_val))
        if accuracy > best_accuracy:
            best, best_accuracy = strength, accuracy
    return best
