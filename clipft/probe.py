"""Baselines on frozen embeddings (``clipft probe``): scikit-learn classifiers on the model's
image embeddings, title embeddings, or both concatenated (early fusion), trained on the same
split and training examples as ``clipft finetune`` and scored with the same metrics.

Embeddings come from the cache (image trunk features, title transformer outputs), so a probe
runs in seconds. Each classifier's regularisation is chosen on the validation split.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.svm import LinearSVC

from .config import FinetuneCfg
from .evaluation import split_targets
from .fileio import atomic_write
from .finetune import prepare_run
from .fusion import ProductFeatures, ProductParts
from .metrics import classification_metrics
from .tasks import attribute_task
from .text_features import text_features

# classifier -> (its regularisation parameter, the values tried on validation)
CLASSIFIERS = {
    "logistic": ("C", (0.1, 1.0, 10.0, 100.0)),
    "svm": ("C", (0.01, 0.1, 1.0, 10.0)),
    "mlp": ("alpha", (1e-4, 1e-2, 1.0)),
}
FEATURES = ("image", "text", "both")


def make_classifier(kind: str, value: float, seed: int = 0):
    if kind == "logistic":
        return LogisticRegression(C=value, max_iter=2000)
    if kind == "svm":
        return LinearSVC(C=value, max_iter=5000, random_state=seed)
    if kind == "mlp":
        return MLPClassifier(hidden_layer_sizes=(256,), alpha=value, max_iter=1000, random_state=seed)
    raise ValueError(f"classifier must be one of {', '.join(CLASSIFIERS)}, got {kind!r}")


def probe_matrix(parts: ProductParts, features: str) -> np.ndarray:
    """Unit image embeddings, unit title embeddings (zero without a title), or both side by side."""
    if features not in FEATURES:
        raise ValueError(f"features must be one of {', '.join(FEATURES)}, got {features!r}")
    blocks = {"image": [parts.image], "text": [parts.title], "both": [parts.image, parts.title]}[features]
    return torch.cat(blocks, dim=1).float().numpy()


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


def run_probe(cfg: FinetuneCfg, out_dir: str | Path, classifiers=("logistic",), features=("both",),
              progress: bool = True) -> pd.DataFrame:
    """Fit every classifier on every feature set for every attribute; score the test split
    on products with their titles and with titles removed; write probe.csv (and the run's config and splits)."""
    out = Path(out_dir)
    # Frozen towers: the embeddings are the model's own, read from the cache.
    cfg = dataclasses.replace(cfg, lock_image=True, unlocked_image_groups=0, lock_text=True, unlocked_text_layers=0,
                              inputs="image" if features == ("image",) else "fusion")
    run = prepare_run(cfg, out, progress)
    run.model.eval()
    text_fn = text_features(run.model, run.tokenizer, run.device, cfg.cache_dir)
    product = run.product_features(cfg, text_fn)
    variants = {"present": product, "removed": product.without_titles()}
    targets = {name: split_targets(run.catalogue.frame, run.specs, run.titles, r) for name, r in run.rows.items()}

    def matrix(feature_fn: ProductFeatures, rows, kind: str) -> np.ndarray:
        with torch.no_grad():
            return probe_matrix(feature_fn.parts(rows), kind)

    results = []
    for spec in run.specs:
        if spec.column not in run.catalogue.frame.columns:
            continue
        task = attribute_task(spec, run.catalogue.frame[spec.column], run.rows["train"], False, cfg.shots, cfg.seed)
        val_rows, val_labels = targets["val"].rows[spec.attribute], targets["val"].labels[spec.attribute]
        test_rows, test_labels = targets["test"].rows[spec.attribute], targets["test"].labels[spec.attribute]
        if not len(task.rows) or len(np.unique(task.labels)) < 2:
            continue
        for kind in features:
            X_train, X_val = matrix(product, task.rows, kind), matrix(product, val_rows, kind)
            for name in classifiers:
                started = time.perf_counter()
                clf, value, val_accuracy = fit_probe(name, X_train, task.labels, X_val, val_labels, cfg.seed)
                seconds = time.perf_counter() - started
                for titles, feature_fn in variants.items():
                    predicted = clf.predict(matrix(feature_fn, test_rows, kind))
                    metrics = classification_metrics(test_labels, predicted)
                    results.append({"attribute": spec.attribute, "classifier": name, "features": kind,
                                    "titles": titles,
                                    "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"], "n": metrics["n"],
                                    "parameter": f"{CLASSIFIERS[name][0]}={value:g}", "val_accuracy": val_accuracy,
                                    "train_examples": len(task.rows), "seconds": round(seconds, 2)})
    table = pd.DataFrame(results)
    with atomic_write(out / "probe.csv") as f:
        table.to_csv(f, index=False)
    return table
