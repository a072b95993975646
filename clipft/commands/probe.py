"""``clipft probe``: classifiers on frozen (cached) embeddings, trained on the same split and
training examples as ``clipft finetune`` and scored with the same metrics, with titles present
and removed. Each classifier's regularisation is chosen on the validation split."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..applicability import training_labels
from ..fileio import atomic_write
from ..metrics import classification_metrics
from ..heads import ProbeHead
from ..labeller_files import save_labeller
from ..probe import CLASSIFIERS, fit_probe, make_classifier, probe_features
from ..training.config import FinetuneCfg
from ..training.tasks import attribute_task
from .prepare import PreparedRun, label_test_split, prepare_run

DEFAULT_INPUTS = ("image",)
CLASSIFIER_NAMES = {type(make_classifier(kind, values[0])).__name__: kind for kind, (_, values) in CLASSIFIERS.items()}


def frozen_config(cfg: FinetuneCfg, inputs) -> FinetuneCfg:
    """Frozen towers: the embeddings are the model's own, read from the cache; titles are
    encoded when an input kind needs them. Only the towers and the task change."""
    towers = dataclasses.replace(cfg.towers, lock_image=True, unlocked_image_groups=0, lock_text=True,
                                 unlocked_text_layers=0)
    task = dataclasses.replace(cfg.task, inputs="image" if tuple(inputs) == ("image",) else "fusion")
    return dataclasses.replace(cfg, towers=towers, task=task)


def probe_attribute(run: PreparedRun, spec, variants: dict, targets, classifiers, inputs) -> tuple[list[dict], object]:
    """Every classifier on every input kind for one attribute, scored on the test split; and the
    classifier on the first input kind that is best on validation (the labeller's)."""
    seed = run.cfg.runtime.seed
    task = attribute_task(spec, training_labels(spec, run.specs, run.catalogue.frame), run.rows["train"], False, run.cfg.split.shots, seed)
    if not len(task.rows) or len(np.unique(task.labels)) < 2:
        return [], None
    val_rows, val_labels = targets["val"].rows[spec.attribute], targets["val"].labels[spec.attribute]
    test_rows, test_labels = targets["test"].rows[spec.attribute], targets["test"].labels[spec.attribute]
    results, chosen = [], None
    for kind in inputs:
        X_train, X_val = probe_features(variants["present"], task.rows, kind), probe_features(variants["present"], val_rows, kind)
        for name in classifiers:
            started = time.perf_counter()
            clf, value, val_accuracy = fit_probe(name, X_train, task.labels, X_val, val_labels, seed)
            seconds = time.perf_counter() - started
            if kind == inputs[0] and (chosen is None or val_accuracy > chosen[0]):
                chosen = (val_accuracy, clf)
            for titles, features in variants.items():
                metrics = classification_metrics(test_labels, clf.predict(probe_features(features, test_rows, kind)))
                results.append({"attribute": spec.attribute, "classifier": name, "inputs": kind, "titles": titles,
                                "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"], "n": metrics["n"],
                                "parameter": f"{CLASSIFIERS[name][0]}={value:g}", "val_accuracy": val_accuracy,
                                "train_examples": len(task.rows), "seconds": round(seconds, 2)})
    return results, chosen[1]


def run_probe(cfg: FinetuneCfg, out_dir: str | Path, classifiers=("logistic",), inputs=DEFAULT_INPUTS,
              progress: bool = True) -> pd.DataFrame:
    """Fit every classifier on every input kind for every attribute; score the test split
    on products with their titles and with titles removed; write probe.csv (and the run's config and splits)."""
    out = Path(out_dir)
    run = prepare_run(frozen_config(cfg, inputs), out, progress)
    run.model.eval()
    product = run.product_features(run.text_fn())
    variants = {"present": product, "removed": product.without_titles()}
    targets = run.targets()
    results, heads = [], {}
    for spec in run.specs:
        if spec.column in run.catalogue.frame.columns:
            rows, clf = probe_attribute(run, spec, variants, targets, classifiers, inputs)
            results += rows
            if clf is not None:
                heads[spec.attribute] = ProbeHead(spec, clf)
    table = pd.DataFrame(results)
    with atomic_write(out / "probe.csv") as f:
        table.to_csv(f, index=False)
    if heads:
        save_probe_labeller(run, out, heads, dataclasses.replace(product, inputs=inputs[0]), targets["val"])
        label_test_split(run, out)
    return table


def save_probe_labeller(run: PreparedRun, out: Path, heads: dict, features, val) -> None:
    """Per attribute, the classifier best on validation on the first input kind, as a labeller."""
    reproduces = {"file": "probe.csv", "inputs": features.inputs, "titles": "present",
                  "classifiers": {a: CLASSIFIER_NAMES[type(h.classifier).__name__] for a, h in heads.items()}}
    save_labeller(out, "probe", run.model, features.text_fn, heads, features, val, run.cfg.runtime.eval_batch_size,
                  {"model": run.cfg.towers.model, "title_column": run.catalogue.title_column, "reproduces": reproduces})
