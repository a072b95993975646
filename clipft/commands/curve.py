"""``clipft curve``: test accuracy against the number of labelled photos, per attribute and
method, over several seeds, to answer "how many labels do I need?".

One catalogue pass, one split and one model serve every point: each point samples its
training examples from the train split (``shots`` per class, balanced where the classes
allow), trains from the same starting weights without writing checkpoints, picks the best
epoch on validation and scores the fixed test split. Every finished point is appended to
curve.csv at once, and a rerun skips the points that are there (resume).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..applicability import training_labels
from ..fileio import atomic_write
from ..metrics import classification_metrics, majority_class_metrics
from ..probe import fit_probe, probe_features
from ..reporting.plots import plot_learning_curve
from ..reporting.tables import labels_needed, markdown_table
from ..training.config import FinetuneCfg
from ..training.evaluation import evaluate, tuned_title_weights
from ..training.loop import fit
from ..training.tasks import attribute_task, training_priors
from .prepare import PreparedRun, prepare_run

# method -> captions of a fine-tuning run, or None for the linear probe
METHODS = {"fine-tuned (labels)": "label", "fine-tuned (templates)": "template", "linear probe": None}
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


class CurveRecords:
    """curve.csv: the finished points, rewritten atomically as each one is added."""

    def __init__(self, path: Path):
        self.path = path
        self.records = pd.read_csv(path, dtype={"size": str}).to_dict("records") if path.is_file() else []
        self.finished = {(r["attribute"], r["method"], str(r["size"]), int(r["seed"])) for r in self.records}

    def add(self, **record) -> None:
        self.records.append(record)
        with atomic_write(self.path) as f:
            pd.DataFrame(self.records, columns=COLUMNS).to_csv(f, index=False)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.records, columns=COLUMNS).astype({"size": str})


class CurvePoints:
    """Scores one point of a curve: a method trained on a sample of the train split, from the
    starting weights every time."""

    def __init__(self, run: PreparedRun):
        self.run = run
        self.text_fn = run.text_fn()
        self.features = run.product_features(self.text_fn)
        self.targets = run.targets()
        self.probe_inputs: dict[str, tuple] = {}  # per attribute: probe features of train, val and test rows

    def reset(self) -> None:
        self.run.model.load_state_dict(self.run.zeroshot_state)
        self.run.model.eval()

    def score(self, spec, captions: str, priors: dict | None = None) -> dict:
        """Test metrics of the current weights, the fusion weight chosen on validation."""
        run = self.run
        batch_size = run.cfg.runtime.eval_batch_size
        weights = tuned_title_weights(run.model, self.features, self.text_fn, [spec], self.targets["val"], captions,
                                      batch_size, priors) if run.cfg.eval.tune_title_weight else {}
        return evaluate(run.model, self.features, self.text_fn, [spec], self.targets["test"], captions,
                        batch_size, weights=weights, priors=priors)[spec.attribute]

    def fine_tune(self, spec, task, captions: str, seed: int) -> dict:
        run = self.run
        self.reset()
        priors = training_priors([task]) if run.cfg.eval.prior_correction else {}
        result = fit(run.model, [task], self.features, self.text_fn,
                     lambda: evaluate(run.model, self.features, self.text_fn, [spec], self.targets["val"], captions,
                                      run.cfg.runtime.eval_batch_size, priors=priors,
                                      calibrated=run.cfg.eval.calibrated_val_loss),
                     run.cfg.optim, seed, None, run.frozen_modules, run.device, progress=False)
        run.model.load_state_dict(result.best_state, strict=False)
        run.model.eval()
        return self.score(spec, captions, priors)

    def linear_probe(self, spec, task, seed: int) -> dict | None:
        if len(np.unique(task.labels)) < 2:
            return None  # a classifier needs two classes
        if spec.attribute not in self.probe_inputs:
            self.reset()
            labels = training_labels(spec, self.run.specs, self.run.catalogue.frame)
            labelled = attribute_task(spec, labels, self.run.rows["train"], False, None, 0).rows
            val, test = self.targets["val"], self.targets["test"]
            self.probe_inputs[spec.attribute] = (
                {r: i for i, r in enumerate(labelled)}, probe_features(self.features, labelled, self.run.inputs),
                probe_features(self.features, val.rows[spec.attribute], self.run.inputs),
                probe_features(self.features, test.rows[spec.attribute], self.run.inputs))
        position, X_train, X_val, X_test = self.probe_inputs[spec.attribute]
        clf, _, _ = fit_probe("logistic", X_train[[position[r] for r in task.rows]], task.labels, X_val,
                              self.targets["val"].labels[spec.attribute], seed)
        return classification_metrics(self.targets["test"].labels[spec.attribute], clf.predict(X_test))

    def reference_lines(self, spec) -> dict[str, dict]:
        """The flat lines that use no labels: zero-shot and the majority class."""
        self.reset()
        return {"zero-shot": self.score(spec, "template"),
                "majority class": majority_class_metrics(self.targets["train"].labels[spec.attribute],
                                                         self.targets["test"].labels[spec.attribute])}


def _write_outputs(out: Path, curve: pd.DataFrame, specs) -> None:
    for spec in specs:
        plot_learning_curve(curve[curve["attribute"] == spec.attribute], spec.attribute, out / f"curve_{spec.attribute}.png")
    needed = labels_needed(curve)
    with atomic_write(out / "labels_needed.csv") as f:
        needed.to_csv(f, index=False)
    with atomic_write(out / "labels_needed.md") as f:
        f.write(markdown_table(needed))


def run_curve(cfg: FinetuneCfg, out_dir: str | Path, sizes=DEFAULT_SIZES, seeds=(0, 1, 2),
              methods=tuple(METHODS), progress: bool = True) -> pd.DataFrame:
    """Every (attribute, method, size, seed) point into ``out_dir``/curve.csv, then one plot per
    attribute (curve_<attribute>.png) and labels_needed.{csv,md}."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"methods: {', '.join(unknown)} unknown (known: {', '.join(METHODS)})")
    out = Path(out_dir)
    run = prepare_run(cfg, out, progress)
    points, records = CurvePoints(run), CurveRecords(out / "curve.csv")
    frame = run.catalogue.frame
    specs = [s for s in run.specs if s.column in frame.columns and len(points.targets["test"].rows[s.attribute])]
    for spec in specs:
        for method, metrics in points.reference_lines(spec).items():
            if (spec.attribute, method, "0", 0) not in records.finished:
                records.add(attribute=spec.attribute, method=method, size="0", seed=0, n_train=0,
                            accuracy=metrics["accuracy"], macro_f1=metrics["macro_f1"], train_seconds=0.0)
    todo = [(spec, method, size, seed) for spec in specs for size in sizes for seed in seeds for method in methods
            if (spec.attribute, method, size_name(size), seed) not in records.finished]
    bar = tqdm(todo, unit="point", desc="learning curve", disable=not progress)
    for spec, method, size, seed in bar:
        bar.set_postfix_str(f"{spec.attribute} {method} size={size_name(size)} seed={seed}")
        captions = METHODS[method]
        labels = training_labels(spec, run.specs, frame)
        task = attribute_task(spec, labels, run.rows["train"], captions == "template", size, seed)
        started = time.perf_counter()
        metrics = points.linear_probe(spec, task, seed) if captions is None else points.fine_tune(spec, task, captions, seed)
        if metrics is not None:
            records.add(attribute=spec.attribute, method=method, size=size_name(size), seed=seed, n_train=len(task.rows),
                        accuracy=metrics["accuracy"], macro_f1=metrics["macro_f1"],
                        train_seconds=round(time.perf_counter() - started, 2))
    bar.close()
    points.reset()
    curve = records.frame()
    _write_outputs(out, curve, specs)
    return curve
