"""Classifiers on frozen embeddings (linear probes and their kin), scikit-learn underneath:
logistic regression, a linear SVM, an MLP and a random forest, the four classic models of the
multimodal reference system. A product is its unit image embedding, its unit title embedding
(zero without a title), or both side by side (early fusion), as :mod:`clipft.fusion` names
them: ``image``, ``text``, ``fusion``."""
from __future__ import annotations

import numpy as np
import torch
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.svm import LinearSVC

from .fusion import INPUTS, ProductFeatures, ProductParts

# classifier -> (its regularisation parameter, the values tried on validation)
CLASSIFIERS = {
    "logistic": ("C", (0.1, 1.0, 10.0, 100.0)),
    "svm": ("C", (0.01, 0.1, 1.0, 10.0)),
    "mlp": ("alpha", (1e-4, 1e-2, 1.0)),
    "forest": ("min_samples_leaf", (1, 4, 16)),
}


def make_classifier(kind: str, value: float, seed: int = 0):
    if kind == "logistic":
        return LogisticRegression(C=value, max_iter=2000)
    if kind == "svm":
        return LinearSVC(C=value, max_iter=5000, random_state=seed)
    if kind == "mlp":
        return MLPClassifier(hidden_layer_sizes=(256,), alpha=value, max_iter=1000, random_state=seed)
    if kind == "forest":
        return RandomForestClassifier(n_estimators=200, min_samples_leaf=int(value), random_state=seed)
    raise ValueError(f"classifier must be one of {', '.join(CLASSIFIERS)}, got {kind!r}")


def probe_matrix(parts: ProductParts, inputs: str) -> np.ndarray:
    """Unit image embeddings, unit title embeddings (zero without a title), or both side by side."""
    if inputs not in INPUTS:
        raise ValueError(f"inputs must be one of {', '.join(INPUTS)}, got {inputs!r}")
    blocks = {"image": [parts.image], "text": [parts.title], "fusion": [parts.image, parts.title]}[inputs]
    return torch.cat(blocks, dim=1).float().numpy()


@torch.no_grad()
def probe_features(features: ProductFeatures, rows, inputs: str) -> np.ndarray:
    """:func:`probe_matrix` of catalogue ``rows``."""
    return probe_matrix(features.parts(np.asarray(rows, dtype=int)), inputs)


def fit_probe(kind: str, X_train, y_train, X_val, y_val, seed: int = 0):
    """The classifier fitted with each value of its parameter; returns the one best on
    validation (first best: the strongest regularisation), the value and its validation accuracy."""
    name, values = CLASSIFIERS[kind]
    best = None
    for value in values:
        clf = make_classifier(kind, value, seed).fit(X_train, y_train)
        accuracy = float(np.mean(clf.predict(X_val) == y_val)) if len(y_val) else float("nan")
        if best is None or accuracy > best[2]:
            best = (clf, value, accuracy)
    return best


def classifier_logits(clf, X: np.ndarray) -> np.ndarray:
    """Scores that a softmax turns into probabilities (n, n_classes): log-probabilities where the
    classifier has them, the SVM's margins otherwise (one column per class, binary included)."""
    if hasattr(clf, "predict_proba"):
        return np.log(np.clip(clf.predict_proba(X), 1e-7, None))
    scores = clf.decision_function(X)
    return np.stack([-scores / 2, scores / 2], axis=1) if scores.ndim == 1 else scores
