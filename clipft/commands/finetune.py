"""``clipft finetune`` (and ``align``): one fine-tuning run, end to end: catalogue -> splits ->
model -> (cached) features -> training -> best epoch -> WiSE-FT -> zero-shot vs fine-tuned on
the test split."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..applicability import training_labels
from ..catalogue import CatalogueError
from ..distributed import current_world
from ..fileio import atomic_write, write_json
from ..heads import PromptHead
from ..labeller_files import save_labeller
from ..metrics import majority_class_metrics
from ..reporting.plots import plot_training_curves
from ..training.checkpoint import RunCheckpoints, load_weights
from ..training.config import FinetuneCfg, flat_config
from ..training.evaluation import evaluate, tuned_title_weights
from ..training.loop import fit
from ..training.tasks import Task, attribute_task, check_trainable, swap_vocabulary, title_task, training_priors
from ..training.weights import wise_ft
from .prepare import PreparedRun, label_test_split, prepare_run

COMPARISON_COLUMNS = ["attribute", "model", "alpha", "titles", "accuracy", "macro_f1", "n", "title_weight"]


@dataclass
class FinetuneResult:
    out_dir: Path
    best_epoch: int
    stopped: str
    comparison: pd.DataFrame
    wise: pd.DataFrame
    split_sizes: dict
    train_seconds: float


@dataclass
class Candidate:
    """A model of the test comparison: its weights and how its classes are captioned."""

    model: str  # zero-shot, fine-tuned, wise-ft, or for title runs the two zero-shot stages
    alpha: float  # WiSE-FT alpha (1: the fine-tuned weights, 0: the starting ones)
    state: dict
    captions: str  # label | template
    priors: dict = field(default_factory=dict)  # log class priors added to its scores (trained candidates)


def build_tasks(run: PreparedRun) -> list[Task]:
    captions, catalogue = run.cfg.task.captions, run.catalogue
    if captions == "title":
        negatives = swap_vocabulary(run.specs) if run.cfg.task.hard_negatives else ()
        tasks = [title_task(run.titles, run.rows["train"], negatives)]
    else:
        tasks = [attribute_task(spec, training_labels(spec, run.specs, catalogue.frame), run.rows["train"], captions == "template",
                                run.cfg.split.shots, run.cfg.runtime.seed)
                 for spec in run.specs if spec.column in catalogue.frame.columns]
    tasks = [t for t in tasks if len(t.rows)]
    if not tasks:
        raise CatalogueError(f"{catalogue.source}: no training examples (labels of "
                             f"{', '.join(run.cfg.catalogue.prompts)} "
                             f"or titles) in the train split")
    check_trainable(tasks, len(run.rows["val"]), catalogue.source)
    return tasks


class RunScorer:
    """Scores a split of a prepared run with the model's current weights; ``priors`` are the
    log class priors of the trained model (empty for zero-shot candidates)."""

    def __init__(self, run: PreparedRun, text_fn, features, priors: dict):
        self.run, self.text_fn, self.features, self.priors = run, text_fn, features, priors
        self.targets = run.targets()

    def __call__(self, split: str, captions: str | None = None, features=None, weights=None, priors=None) -> dict:
        cfg = self.run.cfg
        return evaluate(self.run.model, features or self.features, self.text_fn, self.run.specs, self.targets[split],
                        captions or cfg.task.captions, cfg.runtime.eval_batch_size,
                        with_title_loss=cfg.task.captions == "title", weights=weights,
                        priors=self.priors if priors is None else priors, calibrated=cfg.eval.calibrated_val_loss)

    def title_weights(self, captions: str, priors: dict) -> dict[str, float]:
        if not self.run.cfg.eval.tune_title_weight:
            return {}
        return tuned_title_weights(self.run.model, self.features, self.text_fn, self.run.specs, self.targets["val"],
                                   captions, self.run.cfg.runtime.eval_batch_size, priors)


def wise_ft_scan(run: PreparedRun, score: RunScorer, best: dict) -> tuple[pd.DataFrame, float]:
    """Validation loss and accuracy of each WiSE-FT alpha; the alpha with the lowest loss."""
    rows = []
    for alpha in run.cfg.eval.wise_alphas:
        run.model.load_state_dict(wise_ft(run.zeroshot_state, best, alpha))
        val = score("val")
        rows.append({"alpha": alpha, "val_loss": val["loss"],
                     **{f"{s.attribute}_accuracy": val[s.attribute]["accuracy"] for s in run.specs if s.attribute in val}})
    wise = pd.DataFrame(rows)
    return wise, float(wise.loc[wise["val_loss"].idxmin(), "alpha"]) if len(wise) else 1.0


def candidates(run: PreparedRun, best: dict, alpha: float, priors: dict) -> list[Candidate]:
    """Zero-shot (prompt ensembles), the fine-tuned model, and the WiSE-FT model when its
    alpha is neither end. Title runs align a model: both are zero-shot, before and after."""
    captions = run.cfg.task.captions
    if captions == "title":
        return [Candidate("zero-shot before alignment", 0.0, run.zeroshot_state, "template"),
                Candidate("aligned zero-shot", 1.0, best, "template")]
    out = [Candidate("zero-shot", 0.0, run.zeroshot_state, "template"),
           Candidate("fine-tuned", 1.0, best, captions, priors)]
    if alpha != 1.0:
        out.append(Candidate("wise-ft", alpha, wise_ft(run.zeroshot_state, best, alpha), captions, priors))
    return out


def compare_on_test(run: PreparedRun, score: RunScorer, models: list[Candidate]) -> tuple[list[dict], dict]:
    """Test rows of every candidate, with titles present and (text or fusion) removed, and the
    title weights each candidate chose on validation."""
    rows, chosen = [], {}
    for cand in models:
        run.model.load_state_dict(cand.state)
        weights = chosen[cand.model] = score.title_weights(cand.captions, cand.priors)
        variants = {"present": score.features}
        if run.inputs != "image":  # the same model on products whose titles are missing
            variants["removed"] = score.features.without_titles()
        for titles, features in variants.items():
            test = score("test", cand.captions, features, weights, cand.priors)
            rows += [{"attribute": s.attribute, "model": cand.model, "alpha": cand.alpha, "titles": titles,
                      **{k: test[s.attribute][k] for k in ("accuracy", "macro_f1", "n")},
                      "title_weight": test[s.attribute].get("weight", np.nan)}
                     for s in run.specs if s.attribute in test]
    return rows, chosen


def majority_rows(score: RunScorer, specs) -> list[dict]:
    rows = []
    for spec in specs:
        train, test = score.targets["train"].labels[spec.attribute], score.targets["test"].labels[spec.attribute]
        if len(train) and len(test):
            metrics = majority_class_metrics(train, test)
            rows.append({"attribute": spec.attribute, "model": "majority class", "alpha": np.nan, "titles": "present",
                         **{k: metrics[k] for k in ("accuracy", "macro_f1", "n")}})
    return rows


def save_run_labeller(run: PreparedRun, out: Path, score: RunScorer, chosen: Candidate, weights: dict) -> None:
    """The chosen model (the last candidate: WiSE-FT where it joined, else the fine-tuned or
    aligned model) as a labeller, each attribute scored with the captions and title weight
    the test comparison used."""
    run.model.load_state_dict(chosen.state)
    heads = {s.attribute: PromptHead(s, chosen.captions, weights.get(s.attribute, run.cfg.task.title_weight),
                               log_prior=chosen.priors.get(s.attribute)) for s in run.specs}
    save_labeller(out, "finetune", run.model, score.text_fn, heads, score.features, score.targets["val"],
                  run.cfg.runtime.eval_batch_size,
                  {"model": run.cfg.towers.model, "title_column": run.catalogue.title_column,
                   "reproduces": {"file": "comparison.csv", "model": chosen.model, "alpha": chosen.alpha,
                                  "titles": "present"}})


def _write_results(run: PreparedRun, out: Path, result, tasks, wise, comparison, best_alpha, chosen) -> dict:
    with atomic_write(out / "wise_ft.csv") as f:
        wise.to_csv(f, index=False)
    with atomic_write(out / "comparison.csv") as f:
        comparison.to_csv(f, index=False)
    sizes = {name: int(len(r)) for name, r in run.rows.items()} | {"skipped": int(len(run.catalogue) - len(run.usable))}
    train_seconds = float(sum(row["seconds"] for row in result.history))  # over resumptions too
    write_json(out / "summary.json", {"best_epoch": result.best_epoch, "best_val_loss": result.best_val_loss,
                                      "stopped": result.stopped, "train_seconds": round(train_seconds, 1),
                                      "wise_best_alpha": best_alpha, "splits": sizes,
                                      "fast_path": run.head is not None, "inputs": run.inputs, "title_weights": chosen,
                                      "training_examples": {t.name: len(t.rows) for t in tasks}})
    plot_training_curves(pd.DataFrame(result.history), out / "curves.png")
    return sizes


def run_finetune(cfg: FinetuneCfg, out_dir: str | Path, progress: bool = True) -> FinetuneResult | None:
    """Under torchrun every rank trains its share of each batch and rank 0 alone evaluates the
    result and writes the files; the other ranks return None."""
    out = Path(out_dir)
    run = prepare_run(cfg, out, progress)
    tasks = build_tasks(run)
    world = current_world()
    if world.main:
        write_json(out / "labels.json", {t.name: dict(Counter(map(str, t.labels)).most_common()) for t in tasks}
                   if cfg.task.captions != "title" else {"title": len(tasks[0].rows)})
    text_fn = run.text_fn()
    priors = training_priors(tasks) if cfg.eval.prior_correction else {}
    score = RunScorer(run, text_fn, run.product_features(text_fn), priors)
    train_features = run.product_features(text_fn, train=True)
    result = fit(run.model, tasks, train_features, text_fn, lambda: score("val"), cfg.optim, cfg.runtime.seed,
                 RunCheckpoints(out, flat_config(cfg)), run.frozen_modules, run.device, progress)
    if not world.main:
        return None
    best = load_weights(out / "best.pt")
    wise, best_alpha = wise_ft_scan(run, score, best)
    models = candidates(run, best, best_alpha, priors)
    test_rows, chosen = compare_on_test(run, score, models)
    save_run_labeller(run, out, score, models[-1], chosen[models[-1].model])
    label_test_split(run, out)
    run.model.load_state_dict(best)
    comparison = pd.DataFrame(test_rows + majority_rows(score, run.specs), columns=COMPARISON_COLUMNS)
    comparison = comparison.sort_values(["attribute", "model"], kind="stable").reset_index(drop=True)
    sizes = _write_results(run, out, result, tasks, wise, comparison, best_alpha, chosen)
    train_seconds = float(sum(row["seconds"] for row in result.history))
    return FinetuneResult(out, result.best_epoch, result.stopped, comparison, wise, sizes, train_seconds)
