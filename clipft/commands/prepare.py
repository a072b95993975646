"""The set-up that ``finetune``, ``probe`` and ``curve`` share: catalogue -> model (towers locked
as configured) -> frozen image features (through the cache) -> group-aware split. It writes
config.yaml, skipped.csv and splits.csv into the run folder."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from ..applicability import check_dependencies
from ..cache.encoding import encode_catalogue
from ..cache.image_features import CachedImageFeatures, FrozenEncoder, LiveImageFeatures, Mirrored, frozen_split
from ..cache.text_features import text_features
from ..catalogue import Catalogue, CatalogueError, load_catalogue
from ..distributed import alone, init_distributed
from ..fileio import atomic_write, prepare_output_dir
from ..fusion import ProductFeatures, resolve_inputs
from ..models import load_model, resolve_device, train_preprocess
from ..photo_download import PhotoDownloads
from ..precision import encoding_precision, resolve_precision
from ..prompts import PromptSpec, check_prompt_lengths, load_prompt_specs, warn_missing_columns
from ..reporting.results import write_skipped
from ..training.config import CatalogueCfg, ConfigError, FinetuneCfg, RuntimeCfg, SplitCfg, config_dict
from ..training.evaluation import SplitTargets, split_targets
from ..training.splits import assign_groups, column_splits, split_rows, splits_from_file
from ..training.weights import lock_towers
from ..title_words import lock_title_words

SPLITS = ("train", "val", "test")


# files of every training run; checked before the work that ends in them
RUN_OUTPUTS = ("config.yaml", "splits.csv", "skipped.csv", "best.pt", "last.pt", "history.csv",
               "comparison.csv", "summary.json")


@dataclass
class PreparedRun:
    """Everything a run on one catalogue shares before training: the catalogue and its split,
    the model (its towers locked as configured) and the frozen image features."""

    cfg: FinetuneCfg
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
    flipped: np.ndarray | None  # the same of the mirrored photos (fast path with augment), else None
    usable: np.ndarray  # rows whose photo was read
    rows: dict[str, np.ndarray]  # train/val/test rows
    titles: list[str | None]
    inputs: str  # image | text | fusion, resolved

    def image_fn(self, train: bool = False):
        """Image side for scoring, or for training (augmented when the config says so: mirrored
        cached copies on the fast path, OpenCLIP's training transform on photos)."""
        if self.head is not None:
            return CachedImageFeatures(self.features, self.head, self.device, self.flipped if train else None)
        transform = train_preprocess(self.model) if train and self.cfg.towers.augment else self.preprocess
        return LiveImageFeatures(self.model, self.catalogue.image_paths, transform, self.device)

    def text_fn(self):
        return text_features(self.model, self.tokenizer, self.device, self.cfg.runtime.cache_dir)

    def product_features(self, text_fn, train: bool = False) -> ProductFeatures:
        return ProductFeatures(self.image_fn(train), text_fn, np.array(self.titles, dtype=object),
                               self.inputs, self.cfg.task.title_weight)

    def targets(self) -> dict[str, SplitTargets]:
        """Per split, the labelled rows of every attribute."""
        return {name: split_targets(self.catalogue.frame, self.specs, self.titles, r) for name, r in self.rows.items()}


def _write_config(cfg: FinetuneCfg, out: Path) -> None:
    with atomic_write(out / "config.yaml") as f:
        yaml.safe_dump(config_dict(cfg), f, sort_keys=False)


def assign_splits(split_cfg: SplitCfg, seed: int, catalogue: Catalogue, specs, features: np.ndarray,
                  usable: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(split, group) per catalogue row: from an earlier run's splits.csv, from a column, or
    stratified on the first attribute and never splitting a group (drawn from ``seed``);
    'skipped' for unusable rows."""
    split = np.full(len(catalogue), "skipped", dtype=object)
    groups = np.full(len(catalogue), -1)
    if split_cfg.splits_from:
        split[usable] = splits_from_file(catalogue, split_cfg.splits_from)[usable]
    elif split_cfg.split_column:
        split[usable] = column_splits(catalogue, split_cfg.split_column)[usable]
    else:
        sub = catalogue.frame.iloc[usable]
        strata = sub[specs[0].column] if specs and specs[0].column in sub.columns else np.zeros(len(usable))
        groups[usable] = assign_groups(catalogue, split_cfg.groups, features[usable], split_cfg.duplicate_threshold,
                                       usable)
        split[usable] = split_rows(strata, groups[usable], split_cfg.val_fraction, split_cfg.test_fraction, seed)
    return split, groups


def _load_catalogue(data: CatalogueCfg, runtime: RuntimeCfg, progress: bool) -> Catalogue:
    if not data.data:  # the shipped recipes name no catalogue
        raise ConfigError("data: no catalogue given (--set data=catalogue.csv)")
    return load_catalogue(data.data, data.image_column, data.id_column, data.title_column, data.image_dir,
                          data.limit, runtime.seed, data.sep, data.skip_bad,
                          downloads=PhotoDownloads(runtime.cache_dir, progress=progress))


def _encode(runtime: RuntimeCfg, skip_bad: bool, encoder, preprocess, catalogue: Catalogue, device, progress: bool):
    with encoding_precision(resolve_precision(runtime.precision, device)):
        return encode_catalogue(encoder, preprocess, catalogue, skip_bad, runtime.cache_dir, device,
                                runtime.eval_batch_size, runtime.workers, progress)


def prepare_run(cfg: FinetuneCfg, out: Path, progress: bool = True) -> PreparedRun:
    """catalogue -> model -> frozen features -> split; writes config.yaml, skipped.csv and splits.csv."""
    prepare_output_dir(out, RUN_OUTPUTS)
    world, device = init_distributed(resolve_device(cfg.runtime.device))
    specs = load_prompt_specs(cfg.catalogue.prompts)
    catalogue = _load_catalogue(cfg.catalogue, cfg.runtime, progress)
    warn_missing_columns(specs, catalogue.frame.columns, catalogue.source)
    check_dependencies(specs, catalogue.frame.columns, catalogue.source)
    task = cfg.task
    if task.captions == "title" and catalogue.title_column is None:
        raise CatalogueError(f"{catalogue.source}: captions=title needs a title column (set title_column)")
    inputs = resolve_inputs(task.inputs or ("image" if task.captions == "title" else None), catalogue)
    if world.main:
        _write_config(cfg, out)

    torch.manual_seed(cfg.runtime.seed)
    model, preprocess, tokenizer = load_model(cfg.towers.model, cfg.towers.pretrained, device)
    for spec in specs:  # a prompt cut to nothing by the text tower's context stops the run before any work
        check_prompt_lengths(spec, tokenizer)
    zeroshot_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    frozen_modules = lock_towers(model, cfg.towers)
    if inputs == "image":
        lock_title_words(model)
    fast = frozen_split(model) if cfg.towers.lock_image else None

    # Frozen features serve the fast path and find near-duplicate photos for the split.
    encoder = FrozenEncoder(fast[0] if fast else model.visual)
    encoding = _encode(cfg.runtime, cfg.catalogue.skip_bad, encoder, preprocess, catalogue, device, progress)
    features = np.full((len(catalogue), encoding.embeddings.shape[1]), np.nan, dtype=np.float32)
    features[encoding.rows] = encoding.embeddings
    flipped = None
    if fast and cfg.towers.augment:
        flipped = np.full_like(features, np.nan)
        mirrored = _encode(cfg.runtime, cfg.catalogue.skip_bad, encoder, Mirrored(preprocess), catalogue, device,
                           progress)
        flipped[mirrored.rows] = mirrored.embeddings
    split, groups = assign_splits(cfg.split, cfg.runtime.seed, catalogue, specs, features, encoding.rows)
    if world.main:
        write_skipped(catalogue, encoding.skipped, out / "skipped.csv")
        with atomic_write(out / "splits.csv") as f:
            pd.DataFrame({"id": catalogue.ids, "split": split, "group": groups}).to_csv(f, index=False)
    rows = {name: np.flatnonzero(split == name) for name in SPLITS}
    return PreparedRun(cfg, catalogue, specs, model, preprocess, tokenizer, device, zeroshot_state, frozen_modules,
                       fast[1] if fast else None, features, flipped, encoding.rows, rows, catalogue.titles(), inputs)


def label_test_split(run: PreparedRun, out: Path) -> None:
    """The finished run's labeller (reloaded from ``out``, as predict loads it) labels the run's
    test split through predict's writer into ``out/test``: predictions, metrics, confusion
    matrices, risk-coverage and the most confident mistakes, which ``clipft report`` shows."""
    from ..labeller import Labeller
    from ..reporting.scoring_outputs import write_test_split
    from ..scoring import EncodeOptions

    runtime = run.cfg.runtime
    labeller = Labeller.load(out, run.device, runtime.cache_dir)
    options = EncodeOptions(skip_bad=True, batch_size=runtime.eval_batch_size, workers=runtime.workers,
                            cache_dir=runtime.cache_dir, device=run.device)
    # rank 0 alone, the other ranks being done; at the precision training cached the photos at
    with alone(), encoding_precision(resolve_precision(runtime.precision, run.device)):
        write_test_split(labeller, run.catalogue, run.rows["test"], out, options,
                         {"labeller": str(out), "data": str(run.cfg.catalogue.data),
                          "title_column": run.catalogue.title_column})
