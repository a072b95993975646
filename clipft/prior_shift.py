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
