"""Classification metrics as plain functions of labels (scikit-learn underneath)."""
from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.dummy import DummyClassifier
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
    precision_recall_fscore_support,
)

from .vectors import blank_cells


@dataclass
class LabelCheck:
    """Which labels can be scored: values that are not classes are counted, never mapped."""

    known: np.ndarray  # bool per row
    unknown: dict[str, int]
    missing: int


def check_labels(labels, classes) -> LabelCheck:
    classes = set(classes)
    values = pd.Series(list(labels), dtype=object)
    missing = pd.Series(blank_cells(values), index=values.index)
    known = values.isin(classes) & ~missing
    unknown = Counter(values[~known & ~missing].astype(str))
    return LabelCheck(known.to_numpy(), dict(unknown.most_common()), int(missing.sum()))


def metric_labels(y_true, y_pred) -> list[str]:
    """The classes a metric averages over: those present in the truth or the predictions
    (scikit-learn's default), so classes absent from the data do not count as zero F1."""
    return sorted(pd.unique(np.concatenate([np.asarray(y_true, dtype=object), np.asarray(y_pred, dtype=object)])))


def label_codes(y_true, y_pred) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Both label lists as indices into :func:`metric_labels`: scikit-learn checks and sorts
    string labels element by element, which takes seconds on a million rows; integers are
    scored the same in milliseconds."""
    labels = metric_labels(y_true, y_pred)
    index = pd.Index(labels)
    return index.get_indexer(np.asarray(y_true, dtype=object)), index.get_indexer(np.asarray(y_pred, dtype=object)), labels


def classification_metrics(y_true, y_pred) -> dict:
    """Accuracy, macro-F1, balanced accuracy and per-class precision/recall/F1/support."""
    if not len(y_true):
        raise ValueError("classification_metrics: no labelled rows to score")
    y_true, y_pred, labels = label_codes(y_true, y_pred)
    codes = np.arange(len(labels))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=codes, zero_division=0
    )
    with warnings.catch_warnings():
        # Predicting a class absent from the truth is normal in zero-shot scoring.
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        balanced = balanced_accuracy_score(y_true, y_pred)
    return {
        "n": len(y_true),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=codes, average="macro", zero_division=0)),
        "balanced_accuracy": float(balanced),
        "per_class": {
            label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for label, p, r, f, s in zip(labels, precision, recall, f1, support)
        },
    }


def majority_class_metrics(y_train, y_test) -> dict:
    """The metrics of always predicting the most common training label (scikit-learn's
    ``DummyClassifier``; ties go to the first class in sorted order)."""
    dummy = DummyClassifier(strategy="most_frequent").fit(np.zeros((len(y_train), 1)), np.asarray(y_train))
    return classification_metrics(y_test, dummy.predict(np.zeros((len(y_test), 1))))
