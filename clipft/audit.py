"""Finding wrong catalogue labels: out-of-sample probabilities for every labelled product, then
confident learning (cleanlab's ``find_label_issues``, the well-kept implementation of Northcutt
et al. 2021) to pick the labels the model confidently contradicts.

Every probability is out of sample, the run's own training rows included: a logistic
regression on the labeller's product features (the embedding its head scores, or its probe's
input) is cross-validated over the audited catalogue, so no product is scored by a classifier
that saw its label.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from cleanlab.filter import find_label_issues
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict


def out_of_sample_proba(X: np.ndarray, y: np.ndarray, n_classes: int, folds: int = 5, seed: int = 0,
                        C: float = 10.0) -> np.ndarray:
    """Cross-validated class probabilities (n, n_classes) of a logistic regression; ``y`` are
    class indices, every class with at least ``folds`` examples."""
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)
        proba = cross_val_predict(LogisticRegression(C=C, max_iter=2000), X, y, cv=splitter, method="predict_proba")
    if proba.shape[1] != n_classes:
        raise ValueError(f"expected {n_classes} classes, got {proba.shape[1]}")
    return proba


def label_issues(ids, given: np.ndarray, X: np.ndarray, folds: int = 5, seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """Suspect labels of one attribute, most suspicious first: id, given, suggested,
    confidence (probability of the suggestion), given_probability, rank. Classes with fewer
    than ``folds`` products cannot be cross-validated and are left out (counted in the summary)."""
    ids, given = np.asarray(ids, dtype=object), np.asarray(given, dtype=object)
    values, counts = np.unique(given, return_counts=True)
    kept_classes = values[counts >= folds]
    keep = np.isin(given, kept_classes)
    summary = {"audited": int(keep.sum()), "left_out_rare_classes": int((~keep).sum()), "classes": int(len(kept_classes))}
    columns = ["id", "given", "suggested", "confidence", "given_probability", "rank"]
    if len(kept_classes) < 2:
        return pd.DataFrame(columns=columns), summary
    index = {c: i for i, c in enumerate(kept_classes)}
    y = np.array([index[v] for v in given[keep]])
    proba = out_of_sample_proba(X[keep], y, len(kept_classes), folds, seed)
    ranked = find_label_issues(y, proba, return_indices_ranked_by="self_confidence")
    suggested = proba[ranked].argmax(axis=1)
    issues = pd.DataFrame({"id": ids[keep][ranked], "given": given[keep][ranked], "suggested": kept_classes[suggested],
                           "confidence": np.round(proba[ranked, suggested], 4),
                           "given_probability": np.round(proba[ranked, y[ranked]], 4),
                           "rank": np.arange(1, len(ranked) + 1)})
    summary["issues"] = int(len(issues))
    return issues, summary


def multilabel_issues(ids, given: np.ndarray, X: np.ndarray, classes, separator: str, folds: int = 5,
                      seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """Suspect labels of a multi-valued attribute (``given``: labels such as ``Black|White``):
    one-vs-rest logistic regressions cross-validated over the catalogue give every product a
    probability per class, and cleanlab's multi-label confident learning ranks the labels it
    contradicts. ``suggested`` is every class above one half."""
    from sklearn.model_selection import KFold
    from sklearn.multiclass import OneVsRestClassifier

    from .multilabel import indicator, split_values

    classes = list(classes)
    truth = indicator(given, classes, separator)
    present = truth.sum(axis=0) >= folds  # a class needs examples in every fold
    columns = ["id", "given", "suggested", "confidence", "given_probability", "rank"]
    summary = {"audited": int(len(given)), "left_out_rare_classes": int((~present).sum()), "classes": int(present.sum())}
    if present.sum() < 2:
        return pd.DataFrame(columns=columns), summary | {"issues": 0}
    kept = [c for c, keep in zip(classes, present) if keep]
    splitter = KFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)
        proba = cross_val_predict(OneVsRestClassifier(LogisticRegression(C=10.0, max_iter=2000)), X, truth[:, present],
                                  cv=splitter, method="predict_proba")
    labels = [[kept.index(v) for v in split_values(g, separator) if v in kept] for g in given]
    ranked = find_label_issues(labels, proba, multi_label=True, return_indices_ranked_by="self_confidence")
    suggested = [separator.join(c for c, p in zip(kept, row) if p >= 0.5) for row in proba[ranked]]
    given_probability = [min((proba[i, j] for j in labels[i]), default=0.0) for i in ranked]
    issues = pd.DataFrame({"id": np.asarray(ids, dtype=object)[ranked], "given": np.asarray(given, dtype=object)[ranked],
                           "suggested": suggested, "confidence": np.round(proba[ranked].max(axis=1), 4),
                           "given_probability": np.round(given_probability, 4), "rank": np.arange(1, len(ranked) + 1)})
    return issues, summary | {"issues": int(len(issues))}
