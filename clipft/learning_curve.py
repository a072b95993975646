"""Learning curves (``clipft curve``): test accuracy against the number of labelled photos,
per attribute and method, over several seeds, to answer "how many labels do I need?".

One catalogue pass, one split and one model serve every point: each point samples its
training examples from the train split (``shots`` per class, balanced where the classes
allow), trains from the same starting weights without writing checkpoints, picks the best
epoch on validation and scores the fixed test split. Every finished point is appended to
curve.csv at once, and a rerun skips the points that are there (resume).
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .config import FinetuneCfg
from .evaluation import evaluate, split_targets
from .fileio import atomic_write
from .finetune import prepare_run
from .metrics import classification_metrics
from .plots import plot_learning_curve
from .probe import fit_probe, probe_matrix
from .reports import markdown_table
from .tasks import attribute_task
from .text_features import text_features
from .train import fit

# method -> captions of a fine-tuning run, or None for the linear probe
METHODS = {"fine-tuned (labels)": "label", "fine-tuned (templates)": "template", "linear probe": None}
REFERENCES = ("zero-shot", "majority class")  # flat lines: no labels used (size 0)
DEFAULT_SIZES = (1, 2, 4, 8, 16, 32, 64, None)  # labels per class; None: the whole train split
COLUMNS = ["attribute", "method", "size", "seed", "n_train", "accuracy", "macro_f1", "train_seconds"]


def size_name(size: int | None) -> str:
    return "all" if size is None else str(size)


def parse_sizes(text: str) -> list[int | None]:
    """``"1,2,4,all"`` -> ``[1, 2, 4, None]``."""
    sizes = []
    for item in text.split(","):
        item = item.strip()
        if item == "all":
            sizes.append(None)
        elif item.isdigit() and int(item) > 0:
            sizes.append(int(item))
        else:
            raise ValueError(f"sizes: {item!r} is neither a positive number of labels per class nor 'all'")
    return sizes


def run_curve(cfg: FinetuneCfg, out_dir: str | Path, sizes=DEFAULT_SIZES, seeds=(0, 1, 2),
              methods=tuple(METHODS), progress: bool = True) -> pd.DataFrame:
    """Every (attribute, method, size, seed) point into ``out_dir``/curve.csv, then one plot per
    attribute (curve_<attribute>.png) and labels_needed.{csv,md}."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"methods: {', '.join(unknown)} unknown (known: {', '.join(METHODS)})")
    out = Path(out_dir)
    run = prepare_run(cfg, out, progress)
    model, frame, rows = run.model, run.catalogue.frame, run.rows
    text_fn = text_features(model, run.tokenizer, run.device, cfg.cache_dir)
    features = run.product_features(cfg, text_fn)
    probe_kind = {"image": "image", "text": "text", "fusion": "both"}[run.inputs]
    targets = {name: split_targets(frame, run.specs, run.titles, r) for name, r in rows.items()}

    path = out / "curve.csv"
    records = pd.read_csv(path, dtype={"size": str}).to_dict("records") if path.is_file() else []
    finished = {(r["attribute"], r["method"], str(r["size"]), int(r["seed"])) for r in records}

    def add(**record) -> None:
        records.append(record)
        with atomic_write(path) as f:
            pd.DataFrame(records, columns=COLUMNS).to_csv(f, index=False)

    def score(spec, split: str, captions: str) -> dict:
        weights = {}
        if run.inputs == "fusion" and cfg.tune_title_weight:
            weights = {spec.attribute: evaluate(model, features, text_fn, [spec], targets["val"], captions,
                                                cfg.eval_batch_size, tune_weights=True)[spec.attribute]["weight"]}
        return evaluate(model, features, text_fn, [spec], targets[split], captions, cfg.eval_batch_size,
                        weights=weights)[spec.attribute]

    def fine_tune(spec, task, captions: str, seed: int) -> tuple[dict, float]:
        """Test metrics after training from the starting weights, and the training seconds."""
        model.load_state_dict(run.zeroshot_state)
        started = time.perf_counter()
        result = fit(model, [task], features, text_fn,
                     lambda: evaluate(model, features, text_fn, [spec], targets["val"], captions, cfg.eval_batch_size),
                     dataclasses.replace(cfg, seed=seed, captions=captions), None, run.frozen_modules, run.device,
                     progress=False)
        seconds = time.perf_counter() - started
        model.load_state_dict(result.best_state, strict=False)
        model.eval()
        return score(spec, "test", captions), seconds

    probes: dict[str, _ProbeInputs] = {}  # per attribute: frozen embeddings of its train, val and test rows

    def linear_probe(spec, task, seed: int) -> tuple[dict | None, float]:
        if spec.attribute not in probes:
            model.load_state_dict(run.zeroshot_state)
            probes[spec.attribute] = _ProbeInputs(features, probe_kind, _labelled(spec, frame, rows["train"]),
                                                  targets["val"], targets["test"], spec.attribute)
        probe = probes[spec.attribute]
        if len(np.unique(task.labels)) < 2:
            return None, 0.0  # a classifier needs two classes
        started = time.perf_counter()
        clf, _, _ = fit_probe("logistic", probe.train(task.rows), task.labels, probe.X_val, probe.y_val, seed)
        seconds = time.perf_counter() - started
        return classification_metrics(targets["test"].labels[spec.attribute], clf.predict(probe.X_test)), seconds

    specs = [s for s in run.specs if s.column in frame.columns and len(targets["test"].rows[s.attribute])]
    for spec in specs:  # the flat lines first: they need no labels
        model.load_state_dict(run.zeroshot_state)
        model.eval()
        test_labels = targets["test"].labels[spec.attribute]
        if (spec.attribute, "zero-shot", "0", 0) not in finished:
            metrics = score(spec, "test", "template")
            add(attribute=spec.attribute, method="zero-shot", size="0", seed=0, n_train=0,
                accuracy=metrics["accuracy"], macro_f1=metrics["macro_f1"], train_seconds=0.0)
        if (spec.attribute, "majority class", "0", 0) not in finished:
            values, counts = np.unique(targets["train"].labels[spec.attribute], return_counts=True)
            metrics = classification_metrics(test_labels, np.full(len(test_labels), values[counts.argmax()]))
            add(attribute=spec.attribute, method="majority class", size="0", seed=0, n_train=0,
                accuracy=metrics["accuracy"], macro_f1=metrics["macro_f1"], train_seconds=0.0)

    todo = [(spec, method, size, seed) for spec in specs for size in sizes for seed in seeds for method in methods
            if (spec.attribute, method, size_name(size), seed) not in finished]
    bar = tqdm(todo, unit="point", desc="learning curve", disable=not progress)
    for spec, method, size, seed in bar:
        bar.set_postfix_str(f"{spec.attribute} {method} size={size_name(size)} seed={seed}")
        captions = METHODS[method]
        task = attribute_task(spec, frame[spec.column], rows["train"], captions == "template", size, seed)
        metrics, seconds = linear_probe(spec, task, seed) if captions is None else fine_tune(spec, task, captions, seed)
        if metrics is not None:
            add(attribute=spec.attribute, method=method, size=size_name(size), seed=seed, n_train=len(task.rows),
                accuracy=metrics["accuracy"], macro_f1=metrics["macro_f1"], train_seconds=round(seconds, 2))
    bar.close()
    model.load_state_dict(run.zeroshot_state)

    curve = pd.DataFrame(records, columns=COLUMNS).astype({"size": str})
    for spec in specs:
        plot_learning_curve(curve[curve["attribute"] == spec.attribute], spec.attribute,
                            out / f"curve_{spec.attribute}.png")
    needed = labels_needed(curve)
    with atomic_write(out / "labels_needed.csv") as f:
        needed.to_csv(f, index=False)
    with atomic_write(out / "labels_needed.md") as f:
        f.write(markdown_table(needed))
    return curve


def _labelled(spec, frame, train_rows: np.ndarray) -> np.ndarray:
    """Train rows whose label is a class of the attribute (as attribute_task keeps them)."""
    return attribute_task(spec, frame[spec.column], train_rows, False, None, 0).rows


class _ProbeInputs:
    """Probe features of every labelled train row and of the val and test rows, computed once
    per attribute; each point's training set is a selection of rows."""

    @torch.no_grad()
    def __init__(self, features, kind: str, task_rows: np.ndarray, val, test, attribute: str):
        self.position = {r: i for i, r in enumerate(task_rows)}
        self.X_train = probe_matrix(features.parts(task_rows), kind)
        self.X_val, self.y_val = probe_matrix(features.parts(val.rows[attribute]), kind), val.labels[attribute]
        self.X_test = probe_matrix(features.parts(test.rows[attribute]), kind)

    def train(self, rows) -> np.ndarray:
        return self.X_train[[self.position[r] for r in rows]]


def labels_needed(curve: pd.DataFrame) -> pd.DataFrame:
    """Per attribute and method: mean test accuracy with the whole train split, and the fewest
    labels per class (and labelled photos) whose mean accuracy reaches 90% and 100% of it."""
    trained = curve[~curve["method"].isin(REFERENCES)]
    mean = trained.groupby(["attribute", "method", "size"], sort=False).agg(
        accuracy=("accuracy", "mean"), n_train=("n_train", "mean")).reset_index()
    rows = []
    for (attribute, method), group in mean.groupby(["attribute", "method"], sort=False):
        full = group[group["size"] == "all"]
        if full.empty:
            continue
        target = float(full["accuracy"].iloc[0])
        ordered = group.assign(order=group["size"].map(lambda s: float("inf") if s == "all" else int(s))).sort_values("order")
        row = {"attribute": attribute, "method": method, "accuracy_all": target,
               "n_train_all": int(full["n_train"].iloc[0])}
        for share, label in ((0.9, "90%"), (1.0, "100%")):
            reached = ordered[ordered["accuracy"] >= share * target - 1e-12].iloc[0]
            row[f"shots_{label}"] = reached["size"]
            row[f"n_train_{label}"] = int(round(reached["n_train"]))
        rows.append(row)
    return pd.DataFrame(rows)
