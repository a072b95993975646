"""Attributes with several values per product (a prompt file's ``multi: true``): a black and
white mug is ``Black|White``. Labels are the values joined by the prompt file's separator, in
the order of its classes. Training and validation see one example per (product, value), and the
contrastive loss never counts a product's other values as negatives
(:class:`clipft.losses.CaptionContrastiveLoss`); a prediction holds every class whose calibrated
probability reaches that class's own threshold, fitted on validation for the best F1."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score, hamming_loss
from sklearn.preprocessing import MultiLabelBinarizer

from .metrics import LabelCheck


def split_values(label, separator: str) -> list[str]:
    """The values of one label cell (empty for a blank one)."""
    if label is None or (isinstance(label, float) and np.isnan(label)):
        return []
    return [v.strip() for v in str(label).split(separator) if v.strip()]


def join_values(values, classes, separator: str) -> str:
    """Values as one label, in the order of ``classes`` (so that equal sets are equal strings)."""
    chosen = set(values)
    return separator.join(c for c in classes if c in chosen)


def check_multi_labels(labels, classes, separator: str) -> tuple[np.ndarray, LabelCheck]:
    """(canonical labels, which can be scored): a label is known when every value is a class;
    values that are not are counted, never mapped."""
    classes = list(classes)
    known, unknown, missing, canonical = [], Counter(), 0, []
    for label in labels:
        values = split_values(label, separator)
        outside = [v for v in values if v not in classes]
        missing += not values
        unknown.update(outside)
        known.append(bool(values) and not outside)
        canonical.append(join_values(values, classes, separator) if values and not outside else label)
    return np.array(canonical, dtype=object), LabelCheck(np.array(known, dtype=bool), dict(unknown.most_common()),
                                                         missing)


def expand(rows: np.ndarray, labels: np.ndarray, separator: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One example per (row, value): (rows, single values, each example's full label)."""
    out_rows, values, full = [], [], []
    for row, label in zip(rows, labels):
        for value in split_values(label, separator):
            out_rows.append(row)
            values.append(value)
            full.append(label)
    return np.asarray(out_rows, dtype=int), np.asarray(values, dtype=object), np.asarray(full, dtype=object)


def indicator(labels, classes, separator: str) -> np.ndarray:
    """(n, n_classes) 0/1 matrix of the values of each label."""
    binarizer = MultiLabelBinarizer(classes=list(classes))
    return binarizer.fit_transform([split_values(label, separator) for label in labels])


def fit_class_thresholds(proba: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per class, the probability threshold with the best F1 of that class on validation
    (``truth``: the indicator matrix); a class never present keeps 1.0 (it is never chosen alone
    by its threshold)."""
    thresholds = np.ones(proba.shape[1])
    for c in range(proba.shape[1]):
        if not truth[:, c].any():
            continue
        candidates = np.unique(proba[:, c])
        scores = [f1_score(truth[:, c], proba[:, c] >= t, zero_division=0) for t in candidates]
        thresholds[c] = candidates[int(np.argmax(scores))]
    return thresholds


def choose_values(proba: np.ndarray, classes, separator: str, thresholds: np.ndarray | None) -> np.ndarray:
    """Per row, every class at or above its threshold, the best class when none is. Without
    fitted thresholds (zero-shot) a class is chosen when its probability is at least half the
    best one's."""
    classes = np.asarray(classes, dtype=object)
    best = proba.argmax(axis=1) if len(proba) else np.zeros(0, dtype=int)
    if thresholds is None:
        chosen = proba >= proba.max(axis=1, keepdims=True) / 2
    else:
        chosen = proba >= np.asarray(thresholds)[None, :]
    chosen[np.arange(len(best)), best] |= ~chosen.any(axis=1)
    return np.array([separator.join(classes[row]) for row in chosen], dtype=object)


def multilabel_metrics(y_true, y_pred, classes, separator: str) -> dict:
    """scikit-learn's multi-label metrics: subset accuracy (every value right), micro, macro and
    samples F1, Hamming loss, and per class F1 and support."""
    truth, predicted = indicator(y_true, classes, separator), indicator(y_pred, classes, separator)
    per_class = f1_score(truth, predicted, average=None, zero_division=0)
    return {"n": int(len(truth)), "accuracy": float(accuracy_score(truth, predicted)),
            "subset_accuracy": float(accuracy_score(truth, predicted)),
            "micro_f1": float(f1_score(truth, predicted, average="micro", zero_division=0)),
            "macro_f1": float(f1_score(truth, predicted, average="macro", zero_division=0)),
            "samples_f1": float(f1_score(truth, predicted, average="samples", zero_division=0)),
            "hamming_loss": float(hamming_loss(truth, predicted)),
            "per_class": {c: {"f1": float(f), "support": int(s)}
                          for c, f, s in zip(classes, per_class, truth.sum(axis=0))}}


def other_values(labels: pd.Series | np.ndarray, classes, other: str, separator: str) -> np.ndarray:
    """Labels with every value outside ``classes`` replaced by ``other`` (blank labels kept)."""
    out = []
    for label in labels:
        values = split_values(label, separator)
        out.append(join_values([v if v in classes else other for v in values], list(classes), separator)
                   if values else label)
    return np.asarray(out, dtype=object)
