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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..applicability import training_labels
from ..defaults import CURVE_METHODS
from ..fewshot import fit_blend
from ..fileio import atomic_write
from ..metrics import classification_metrics, majority_class_metrics
from ..prior_shift import adapted_scores, fit_strength, shared_prior
from ..probe import classifier_logits, fit_probe, probe_features
from ..reporting.plots import plot_learning_curve
from ..reporting.tables import labels_needed, markdown_table
from ..training.config import FinetuneCfg
from ..training.evaluation import attribute_logits, evaluate, tuned_title_weights
from ..training.loop import fit
from ..training.tasks import attribute_task, class_log_prior, training_priors
from .prepare import PreparedRun, prepare_run

# method -> how it learns: the captions of a fine-tuning run, or a classifier on cached embeddings
METHODS = dict(zip(CURVE_METHODS, ("label", "template", "probe", "gda", "tip")))
BEST = "best on validation"  # per attribute, size and seed: the method most accurate on validation
DEFAULT_SIZES = (1, 2, 4, 8, 16, 32, 64, None)  # labels per class; None: the whole train split
COLUMNS = ["attribute", "method", "size", "seed", "n_train", "accuracy", "macro_f1", "train_seconds",
           "val_accuracy", "prior_strength", "chosen"]


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
        found = pd.read_csv(path, dtype={"size": str}) if path.is_file() else pd.DataFrame(columns=COLUMNS)
        # rows of an older curve.csv, without validation accuracy (nor prior adaptation), are scored
        # again; best rows are derived again at the end
        stale = found["val_accuracy"].isna() if "val_accuracy" in found else pd.Series(True, index=found.index)
        keep = (found["method"] != BEST) & (~stale | (found["method"] == "majority class"))
        self.records = found[keep].to_dict("records")
        self.finished = {(r["attribute"], r["method"], str(r["size"]), int(r["seed"])) for r in self.records}

    def add(self, **record) -> None:
        self.records.append(record)
        self.write(self.frame())

    def write(self, frame: pd.DataFrame) -> None:
        with atomic_write(self.path) as f:
            frame.to_csv(f, index=False)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.records, columns=COLUMNS).astype({"size": str})


def with_best(curve: pd.DataFrame) -> pd.DataFrame:
    """``curve`` and, per attribute, size and seed, a :data:`BEST` row: of the methods trained at
    that point and the lines that use no labels, the one with the highest validation accuracy
    (what a user asking for "best" gets), with its test scores and its name under ``chosen``."""
    rest = curve[curve["method"] != BEST]
    scored = rest[rest["val_accuracy"].notna()]
    trained = scored[scored["n_train"] > 0]
    if trained.empty:
        return rest
    points = trained[["attribute", "size", "seed", "n_train"]].drop_duplicates(["attribute", "size", "seed"])
    no_labels = scored[scored["n_train"] == 0].drop(columns=["size", "seed", "n_train"])
    candidates = pd.concat([trained, points.merge(no_labels, on="attribute")], ignore_index=True)
    chosen = candidates.loc[candidates.groupby(["attribute", "size", "seed"], sort=False)["val_accuracy"].idxmax()]
    return pd.concat([rest, chosen.assign(chosen=chosen["method"], method=BEST)], ignore_index=True)


@dataclass
class Scores:
    """One method's scores of an attribute's validation and test products (classes in the prompt
    file's order) and the log class prior they assume (what prior adaptation takes out)."""

    val: np.ndarray
    test: np.ndarray
    log_source: np.ndarray


@dataclass
class AttributeData:
    """What every point of one attribute is scored with: the class of each validation and test
    product, and the starting model's embeddings (train rows by position) and zero-shot scores."""

    classes: np.ndarray
    y_val: np.ndarray
    y_test: np.ndarray
    position: dict
    embeddings: dict[str, np.ndarray]
    probe: dict[str, np.ndarray]
    zero_shot: Scores

    def result(self, scores: Scores, adapt_prior: bool) -> dict:
        """Test metrics of ``scores``, after EM prior adaptation where ``adapt_prior`` and
        validation show it helps (:func:`clipft.prior_shift.fit_strength`). The prior is estimated
        once on the validation and test products together, unlabelled, so that validation judges
        the same prior the test products get."""
        strength = fit_strength(scores.val, self.y_val, scores.log_source, [scores.test]) if adapt_prior else None
        val, test = scores.val, scores.test
        if strength is not None:
            prior = shared_prior([val, test], scores.log_source, strength)
            val, test = (adapted_scores(s, scores.log_source, strength, prior) for s in (val, test))
        return self._row(test.argmax(axis=1), val.argmax(axis=1)) | {"prior_strength": strength}

    def prior_only(self) -> dict:
        """Every product given the most frequent class as EM estimates it from the zero-shot
        scores of the validation and test products, without labels: what a photo that tells
        nothing leaves."""
        common = np.argmax(shared_prior([self.zero_shot.val, self.zero_shot.test], np.zeros(len(self.classes))))
        return self._row(np.full(len(self.y_test), common), np.full(len(self.y_val), common))

    def _row(self, test_predicted: np.ndarray, val_predicted: np.ndarray) -> dict:
        """A curve.csv row's scores from predicted class indices of test and validation."""
        metrics = classification_metrics(self.classes[self.y_test], self.classes[test_predicted])
        return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
                "val_accuracy": float(np.mean(val_predicted == self.y_val))}


class CurvePoints:
    """Scores one point of a curve: a method trained on a sample of the train split, from the
    starting weights every time."""

    def __init__(self, run: PreparedRun):
        self.run = run
        self.text_fn = run.text_fn()
        self.features = run.product_features(self.text_fn)
        self.targets = run.targets()
        self.data: dict[str, AttributeData] = {}

    def reset(self) -> None:
        self.run.model.load_state_dict(self.run.zeroshot_state)
        self.run.model.eval()

    def attribute(self, spec) -> AttributeData:
        """The attribute's :class:`AttributeData`, computed once from the starting weights."""
        if spec.attribute not in self.data:
            self.reset()
            run, val, test = self.run, self.targets["val"], self.targets["test"]
            labelled = attribute_task(spec, training_labels(spec, run.specs, run.catalogue.frame), run.rows["train"],
                                      False, None, 0).rows
            rows = {"train": labelled, "val": val.rows[spec.attribute], "test": test.rows[spec.attribute]}
            index = {c: i for i, c in enumerate(spec.classes)}
            self.data[spec.attribute] = AttributeData(
                np.asarray(spec.classes, dtype=object), np.array([index[v] for v in val.labels[spec.attribute]]),
                np.array([index[v] for v in test.labels[spec.attribute]]), {r: i for i, r in enumerate(labelled)},
                {k: self._embeddings(r) for k, r in rows.items()},
                {k: probe_features(self.features, r, run.inputs) for k, r in rows.items()},
                self._logits(spec, rows["val"], rows["test"], "template", None))
        return self.data[spec.attribute]

    def _embeddings(self, rows: np.ndarray) -> np.ndarray:
        batch = self.run.cfg.runtime.eval_batch_size
        with torch.no_grad():  # unit rows: a photo + title blend is shorter, and the adapters compare directions
            return np.concatenate([F.normalize(self.features(rows[i : i + batch]).float(), dim=-1).cpu().numpy()
                                   for i in range(0, len(rows), batch)] or [np.zeros((0, 0))])

    def _logits(self, spec, val_rows, test_rows, captions: str, priors: dict | None) -> Scores:
        """The current model's scores of validation and test, the fusion weight chosen on validation."""
        run, batch = self.run, self.run.cfg.runtime.eval_batch_size
        weights = tuned_title_weights(run.model, self.features, self.text_fn, [spec], self.targets["val"], captions,
                                      batch, priors) if run.cfg.eval.tune_title_weight else {}
        logits = [attribute_logits(run.model, self.features, self.text_fn, spec, rows, captions, batch,
                                   weights.get(spec.attribute), priors) for rows in (val_rows, test_rows)]
        source = (priors or {}).get(spec.attribute, np.zeros(len(spec.classes)))
        return Scores(logits[0], logits[1], np.asarray(source, dtype=np.float64))

    def fine_tune(self, spec, task, captions: str, seed: int) -> Scores:
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
        return self._logits(spec, self.targets["val"].rows[spec.attribute], self.targets["test"].rows[spec.attribute],
                            captions, priors)

    def linear_probe(self, spec, task, seed: int) -> Scores | None:
        if len(np.unique(task.labels)) < 2:
            return None  # a classifier needs two classes
        data = self.attribute(spec)
        taken = [data.position[r] for r in task.rows]
        clf, _, _ = fit_probe("logistic", data.probe["train"][taken], task.labels, data.probe["val"],
                              data.classes[data.y_val], seed)
        columns = [list(clf.classes_).index(c) if c in clf.classes_ else None for c in data.classes]

        def scores(X):  # the probe's log-probabilities in the prompt file's class order; absent classes at 1e-7
            own = classifier_logits(clf, X)
            return np.stack([own[:, i] if i is not None else np.full(len(X), np.log(1e-7)) for i in columns], axis=1)

        return Scores(scores(data.probe["val"]), scores(data.probe["test"]), class_log_prior(task.labels, data.classes))

    def adapter(self, spec, task, kind: str) -> Scores:
        """GDA or Tip-Adapter on the starting model's embeddings, blended with its zero-shot scores."""
        data = self.attribute(spec)
        index = {c: i for i, c in enumerate(data.classes)}
        y = np.array([index[v] for v in task.labels])
        X = data.embeddings["train"][[data.position[r] for r in task.rows]]
        blend = fit_blend(kind, X, y, len(data.classes), data.embeddings["val"], data.zero_shot.val, data.y_val)
        # GDA's scores carry the log prior of its labelled sample (a class without examples: the mean score, so
        # the mean prior); Tip-Adapter's votes carry none that is log-linear
        log_prior = class_log_prior(task.labels, data.classes)
        log_prior[~blend.adapter.present_] = log_prior[blend.adapter.present_].mean()
        source = blend.weight / blend.adapter_scale * log_prior if kind == "gda" else np.zeros(len(data.classes))
        return Scores(blend.decision_function(data.embeddings["val"], data.zero_shot.val),
                      blend.decision_function(data.embeddings["test"], data.zero_shot.test), source)

    def point(self, spec, task, method: str, seed: int) -> Scores | None:
        kind = METHODS[method]
        if kind == "probe":
            return self.linear_probe(spec, task, seed)
        if kind in ("gda", "tip"):
            return self.adapter(spec, task, kind)
        return self.fine_tune(spec, task, kind, seed)

    def reference_lines(self, spec) -> dict[str, dict]:
        """The flat lines that use no labels: zero-shot (as it scores, no prior adaptation), the
        catalogue prior and the majority class (which reads the train split's labels)."""
        data = self.attribute(spec)
        return {"zero-shot": data.result(data.zero_shot, False), "catalogue prior (EM)": data.prior_only(),
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


def _reference_rows(points: CurvePoints, records: CurveRecords, specs) -> None:
    for spec in specs:
        for method, metrics in points.reference_lines(spec).items():
            if (spec.attribute, method, "0", 0) not in records.finished:
                records.add(attribute=spec.attribute, method=method, size="0", seed=0, n_train=0,
                            accuracy=metrics["accuracy"], macro_f1=metrics["macro_f1"], train_seconds=0.0,
                            val_accuracy=metrics.get("val_accuracy"), prior_strength=None)


def run_curve(cfg: FinetuneCfg, out_dir: str | Path, sizes=DEFAULT_SIZES, seeds=(0, 1, 2),
              methods=tuple(METHODS), progress: bool = True, adapt_prior: bool = True) -> pd.DataFrame:
    """Every (attribute, method, size, seed) point into ``out_dir``/curve.csv with, per attribute,
    size and seed, the :data:`BEST` method's row; then one plot per attribute
    (curve_<attribute>.png) and labels_needed.{csv,md}. ``adapt_prior``: each method's scores may
    take the test products' own class prior (EM), where validation shows it helps."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"methods: {', '.join(unknown)} unknown (known: {', '.join(METHODS)})")
    out = Path(out_dir)
    run = prepare_run(cfg, out, progress)
    points, records = CurvePoints(run), CurveRecords(out / "curve.csv")
    frame = run.catalogue.frame
    specs = [s for s in run.specs if s.column in frame.columns and len(points.targets["test"].rows[s.attribute])]
    _reference_rows(points, records, specs)
    todo = [(spec, method, size, seed) for spec in specs for size in sizes for seed in seeds for method in methods
            if (spec.attribute, method, size_name(size), seed) not in records.finished]
    bar = tqdm(todo, unit="point", desc="learning curve", disable=not progress)
    for spec, method, size, seed in bar:
        bar.set_postfix_str(f"{spec.attribute} {method} size={size_name(size)} seed={seed}")
        labels = training_labels(spec, run.specs, frame)
        task = attribute_task(spec, labels, run.rows["train"], METHODS[method] == "template", size, seed)
        started = time.perf_counter()
        scores = points.point(spec, task, method, seed)
        if scores is not None:
            records.add(attribute=spec.attribute, method=method, size=size_name(size), seed=seed, n_train=len(task.rows),
                        **points.attribute(spec).result(scores, adapt_prior),
                        train_seconds=round(time.perf_counter() - started, 2))
    bar.close()
    points.reset()
    curve = with_best(records.frame())
    records.write(curve)
    _write_outputs(out, curve, specs)
    return curve
