"""One fine-tuning run, end to end: catalogue -> splits -> model -> (cached) features ->
training -> best epoch -> WiSE-FT -> zero-shot vs fine-tuned on the test split."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from .config import FinetuneCfg, config_dict
from .data import Catalogue, CatalogueError, load_catalogue
from .embeddings import encode_catalogue
from .evaluation import SplitTargets, evaluate, split_targets
from .distributed import current_world, init_distributed
from .fileio import atomic_write, write_json
from .fusion import ProductFeatures, resolve_inputs
from .image_features import CachedImageFeatures, FrozenEncoder, LiveImageFeatures, frozen_split
from .models import load_model, resolve_device, train_preprocess
from .plots import plot_training_curves
from .prompts import PromptSpec, load_prompt_specs
from .reports import write_skipped
from .splits import assign_groups, column_splits, split_rows, splits_from_file
from .text_features import text_features
from .tasks import attribute_task, swap_vocabulary, title_task
from .train import fit, lock_towers, wise_ft


@dataclass
class FinetuneResult:
    out_dir: Path
    best_epoch: int
    stopped: str
    comparison: pd.DataFrame
    wise: pd.DataFrame
    split_sizes: dict
    train_seconds: float


def _majority(train: SplitTargets, test: SplitTargets, attribute: str) -> dict:
    labels = test.labels[attribute]
    if not len(train.labels[attribute]) or not len(labels):
        return {}
    top = Counter(train.labels[attribute]).most_common(1)[0][0]
    return {"accuracy": float(np.mean(labels == top)), "macro_f1": float("nan"), "n": len(labels)}


@dataclass
class PreparedRun:
    """Everything a run on one catalogue shares before training: the catalogue and its split,
    the model (its towers locked as configured) and the frozen image features."""

    catalogue: Catalogue
    specs: list[PromptSpec]
    model: torch.nn.Module
    preprocess: object
    tokenizer: object
    device: str
    zeroshot_state: dict
    frozen_modules: list
    head: torch.nn.Module | None  # trainable head on cached features (fast path), else None
    features: np.ndarray  # per catalogue row: frozen image features (NaN where skipped)
    usable: np.ndarray  # rows whose photo was read
    rows: dict[str, np.ndarray]  # train/val/test rows
    titles: list[str | None]
    inputs: str  # image | text | fusion, resolved

    def image_fn(self, transform=None):
        """Image side for scoring (or, with a training ``transform``, for training)."""
        if self.head is not None:
            return CachedImageFeatures(self.features, self.head, self.device)
        return LiveImageFeatures(self.model, self.catalogue.image_paths, transform or self.preprocess, self.device)

    def product_features(self, cfg: FinetuneCfg, text_fn, transform=None) -> ProductFeatures:
        return ProductFeatures(self.image_fn(transform), text_fn, np.array(self.titles, dtype=object),
                               self.inputs, cfg.title_weight)


def prepare_run(cfg: FinetuneCfg, out: Path, progress: bool = True) -> PreparedRun:
    """catalogue -> model -> frozen features -> split; writes config.yaml, skipped.csv and splits.csv."""
    out.mkdir(parents=True, exist_ok=True)
    world, device = init_distributed(resolve_device(cfg.device))
    specs = load_prompt_specs(cfg.prompts)
    catalogue = load_catalogue(cfg.data, cfg.image_column, cfg.id_column, cfg.title_column, cfg.image_dir,
                               cfg.limit, cfg.seed)
    if cfg.captions == "title" and catalogue.title_column is None:
        raise CatalogueError(f"{catalogue.source}: captions=title needs a title column (set title_column)")
    inputs = resolve_inputs(cfg.inputs or ("image" if cfg.captions == "title" else None), catalogue)
    if world.main:
        with atomic_write(out / "config.yaml") as f:
            yaml.safe_dump(config_dict(cfg), f, sort_keys=False)

    torch.manual_seed(cfg.seed)
    model, preprocess, tokenizer = load_model(cfg.model, cfg.pretrained, device)
    zeroshot_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    frozen_modules = lock_towers(model, cfg)
    fast = frozen_split(model) if cfg.lock_image and cfg.unlocked_image_groups == 0 else None

    # Frozen features serve the fast path and find near-duplicate photos for the split.
    encoder = FrozenEncoder(fast[0] if fast else model.visual)
    encoding = encode_catalogue(encoder, preprocess, catalogue, cfg.skip_bad, cfg.cache_dir, device,
                                cfg.eval_batch_size, cfg.workers, progress)
    usable = encoding.rows
    if world.main:
        write_skipped(catalogue, encoding.skipped, out / "skipped.csv")
    features = np.full((len(catalogue), encoding.embeddings.shape[1]), np.nan, dtype=np.float32)
    features[usable] = encoding.embeddings

    # Splits: from a column, or stratified on the first attribute and never splitting a group.
    split = np.full(len(catalogue), "skipped", dtype=object)
    groups = np.full(len(catalogue), -1)
    if cfg.splits_from:
        split[usable] = splits_from_file(catalogue, cfg.splits_from)[usable]
    elif cfg.split_column:
        split[usable] = column_splits(catalogue, cfg.split_column)[usable]
    else:
        sub = catalogue.frame.iloc[usable]
        strata = sub[specs[0].column] if specs and specs[0].column in sub.columns else np.zeros(len(usable))
        groups[usable] = assign_groups(catalogue, cfg.groups, features[usable], cfg.duplicate_threshold, usable)
        split[usable] = split_rows(strata, groups[usable], cfg.val_fraction, cfg.test_fraction, cfg.seed)
    if world.main:
        with atomic_write(out / "splits.csv") as f:
            pd.DataFrame({"id": catalogue.ids, "split": split, "group": groups}).to_csv(f, index=False)
    rows = {name: np.flatnonzero(split == name) for name in ("train", "val", "test")}
    return PreparedRun(catalogue, specs, model, preprocess, tokenizer, device, zeroshot_state, frozen_modules,
                       fast[1] if fast else None, features, usable, rows, catalogue.titles(), inputs)


def run_finetune(cfg: FinetuneCfg, out_dir: str | Path, progress: bool = True) -> FinetuneResult | None:
    """Under torchrun every rank trains its share of each batch and rank 0 alone evaluates the
    result and writes the files; the other ranks return None."""
    out = Path(out_dir)
    run = prepare_run(cfg, out, progress)
    catalogue, specs, model, rows, titles = run.catalogue, run.specs, run.model, run.rows, run.titles
    zeroshot_state, device = run.zeroshot_state, run.device

    if cfg.captions == "title":
        tasks = [title_task(titles, rows["train"], swap_vocabulary(specs) if cfg.hard_negatives else ())]
    else:
        tasks = [attribute_task(spec, catalogue.frame[spec.column], rows["train"], cfg.captions == "template",
                                cfg.shots, cfg.seed) for spec in specs if spec.column in catalogue.frame.columns]
    tasks = [t for t in tasks if len(t.rows)]
    if not tasks:
        raise CatalogueError(f"{catalogue.source}: no training examples (labels of {', '.join(cfg.prompts)} "
                             f"or titles) in the train split")
    world = current_world()
    if world.main:
        write_json(out / "labels.json", {t.name: dict(Counter(map(str, t.labels)).most_common()) for t in tasks}
                   if cfg.captions != "title" else {"title": len(tasks[0].rows)})

    text_fn = text_features(model, run.tokenizer, device, cfg.cache_dir)
    eval_features = run.product_features(cfg, text_fn)
    train_features = eval_features if run.head is not None else run.product_features(
        cfg, text_fn, train_preprocess(model) if cfg.augment else None)
    targets = {name: split_targets(catalogue.frame, specs, titles, r) for name, r in rows.items()}
    title_loss = cfg.captions == "title"
    fusion = run.inputs == "fusion"

    def score(split_name: str, captions: str = cfg.captions, features=eval_features, **weights) -> dict:
        return evaluate(model, features, text_fn, specs, targets[split_name], captions, cfg.eval_batch_size,
                        with_title_loss=title_loss, **weights)

    result = fit(model, tasks, train_features, text_fn, lambda: score("val"), cfg, out, run.frozen_modules, device,
                 progress)
    train_seconds = float(sum(row["seconds"] for row in result.history))  # over resumptions too
    if not world.main:
        return None
    best = torch.load(out / "best.pt", map_location="cpu", weights_only=True)["state_dict"]

    wise_rows = []
    for alpha in cfg.wise_alphas:
        model.load_state_dict(wise_ft(zeroshot_state, best, alpha))
        val = score("val")
        wise_rows.append({"alpha": alpha, "val_loss": val["loss"],
                          **{f"{s.attribute}_accuracy": val[s.attribute]["accuracy"] for s in specs if s.attribute in val}})
    wise = pd.DataFrame(wise_rows)
    best_alpha = float(wise.loc[wise["val_loss"].idxmin(), "alpha"]) if len(wise) else 1.0

    comparison = []
    # Title runs align a model: both rows are zero-shot with prompt ensembles, before and after.
    names = ("zero-shot before alignment", "aligned zero-shot") if cfg.captions == "title" else ("zero-shot", "fine-tuned")
    models = [(names[0], zeroshot_state, "template"), (names[1], best, cfg.captions)]
    if best_alpha not in (0.0, 1.0):
        models.append((f"wise-ft alpha={best_alpha:g}", wise_ft(zeroshot_state, best, best_alpha), cfg.captions))
    chosen_weights = {}
    for name, state, captions in models:
        model.load_state_dict(state)
        captions = "template" if captions == "title" else captions
        weights = {}
        if fusion and cfg.tune_title_weight:
            val = score("val", captions, tune_weights=True)
            weights = {s.attribute: val[s.attribute]["weight"] for s in specs if s.attribute in val}
            chosen_weights[name] = weights
        variants = [(name, eval_features)]
        if run.inputs != "image":  # the same model on products whose titles are missing
            variants.append((f"{name} (no titles)", eval_features.without_titles()))
        for label, features in variants:
            test = score("test", captions, features, weights=weights)
            comparison += [{"attribute": s.attribute, "model": label,
                            **{k: test[s.attribute][k] for k in ("accuracy", "macro_f1", "n")},
                            **({"title_weight": test[s.attribute]["weight"]} if fusion else {})}
                           for s in specs if s.attribute in test]
    for spec in specs:
        majority = _majority(targets["train"], targets["test"], spec.attribute)
        if majority:
            comparison.append({"attribute": spec.attribute, "model": "majority class", **majority})
    model.load_state_dict(best)
    comparison = pd.DataFrame(comparison).sort_values(["attribute", "model"], kind="stable").reset_index(drop=True)

    with atomic_write(out / "wise_ft.csv") as f:
        wise.to_csv(f, index=False)
    with atomic_write(out / "comparison.csv") as f:
        comparison.to_csv(f, index=False)
    sizes = {name: int(len(r)) for name, r in rows.items()} | {"skipped": int(len(catalogue) - len(run.usable))}
    write_json(out / "summary.json", {"best_epoch": result.best_epoch, "best_val_loss": result.best_val_loss,
                                      "stopped": result.stopped, "train_seconds": round(train_seconds, 1),
                                      "wise_best_alpha": best_alpha, "splits": sizes,
                                      "fast_path": run.head is not None,
                                      "inputs": run.inputs, "title_weights": chosen_weights,
                                      "training_examples": {t.name: len(t.rows) for t in tasks}})
    plot_training_curves(pd.DataFrame(result.history), out / "curves.png")
    return FinetuneResult(out, result.best_epoch, result.stopped, comparison, wise, sizes, train_seconds)

