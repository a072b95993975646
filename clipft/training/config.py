"""Training configuration: a dataclass whose defaults live here, loaded from a YAML recipe
(``configs/*.yaml`` only override defaults) and overridable with ``key=value`` strings."""
from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field

import yaml

from ..fileio import read_yaml
from ..fusion import INPUTS
from ..precision import PrecisionError, check_precision
from ..shipped import not_found, resolve

CAPTIONS = ("label", "template", "title")


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the file or key."""


@dataclass
class FinetuneCfg:
    # data
    data: str = ""  # catalogue CSV
    prompts: list[str] = field(default_factory=list)  # one prompt file per attribute
    image_column: str | None = None
    id_column: str | None = None
    title_column: str | None = None
    image_dir: str | None = None
    sep: str | None = None  # the CSV's separator (default: the one its header uses; tab for .tsv)
    groups: str | None = None  # CSV with id,group (e.g. groups.csv), or a column name of the catalogue
    duplicate_threshold: float = 0.95  # cosine of mean-centred image features above which photos share a group
    split_column: str | None = None  # a column with train/val/test, instead of a random split
    splits_from: str | None = None  # splits.csv of an earlier run (e.g. the alignment): reuse its split
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    shots: int | None = None  # training examples per class (None: the whole train split)
    limit: int | None = None  # a seeded sample of the catalogue, for quick runs
    skip_bad: bool = False
    # model
    model: str = "lite0-minilm"
    pretrained: str | None = None
    device: str = "auto"
    # captions: bare class value, the prompt file's templates, or the product title
    captions: str = "label"
    hard_negatives: bool = False  # title captions: add a counterfactual title per photo, one class word swapped
    # what a product is to the classifier (clipft.fusion): its photo, its title, or both fused
    inputs: str | None = None  # image | text | fusion (default: fusion when the catalogue has titles)
    title_weight: float = 0.5  # fusion: weight of the title embedding (training, and scoring unless tuned)
    tune_title_weight: bool = True  # fusion: per attribute, score with the weight that is best on validation
    title_dropout: float = 0.0  # probability that a training example's title is blanked (seeded)
    # what trains
    lock_image: bool = True
    unlocked_image_groups: int = 0  # with lock_image: leave the last N layer groups of the image tower trainable
    lock_text: bool = False
    unlocked_text_layers: int = 0  # with lock_text: leave the last N text layers trainable
    augment: bool = False  # cached features: a mirrored copy half the time; photos: OpenCLIP's training transform
    # optimisation
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-5  # pretrained tower weights
    lr_head: float | None = None  # projections and logit scale (default: lr)
    weight_decay: float = 0.1
    warmup_steps: int = 20
    grad_clip: float = 1.0  # gradient norm limit (0: no clipping)
    patience: int = 3  # epochs without a lower validation loss before stopping
    prior_correction: bool = True  # add the log class frequencies of the training labels to fine-tuned scores
    calibrated_val_loss: bool = True  # choose epochs on each attribute's validation loss after temperature scaling
    validate_start: bool = False  # also score the starting weights (epoch 0): they are kept if no epoch beats them
    min_epoch_steps: int = 1  # per task: a few-shot epoch is lengthened to at least this many batches
    wise_alphas: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    # running
    seed: int = 0
    eval_batch_size: int = 256
    workers: int = 0
    cache_dir: str | None = None
    precision: str | None = None  # frozen encoding pass: fp32 | amp | amp_bf16 | int8 (default: amp on GPU, else fp32)

    def __post_init__(self) -> None:
        # Paths given from Python (pathlib) are stored as text so the resolved config saves as YAML.
        for name, value in vars(self).items():
            if isinstance(value, os.PathLike):
                setattr(self, name, os.fspath(value))
        self.prompts = [os.fspath(p) for p in self.prompts]
        if self.captions not in CAPTIONS:
            raise ConfigError(f"captions: {self.captions!r} is not one of {', '.join(CAPTIONS)}")
        for name in ("val_fraction", "test_fraction"):
            if not 0 < getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be between 0 and 1, got {getattr(self, name)}")
        if self.val_fraction + self.test_fraction >= 1:
            raise ConfigError("val_fraction + test_fraction must leave rows for training")
        for name in ("epochs", "batch_size", "eval_batch_size", "min_epoch_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be at least 1, got {getattr(self, name)}")
        if self.shots is not None and self.shots < 1:
            raise ConfigError(f"shots: must be at least 1, got {self.shots}")
        if self.captions != "title" and not self.prompts:
            raise ConfigError("prompts: give at least one prompt file (captions are class labels)")
        if self.inputs is not None and self.inputs not in INPUTS:
            raise ConfigError(f"inputs: {self.inputs!r} is not one of {', '.join(INPUTS)}")
        if self.captions == "title" and self.inputs not in (None, "image"):
            raise ConfigError(f"inputs: {self.inputs!r} cannot be used with captions=title (the title is the caption)")
        for name in ("title_weight", "title_dropout"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"{name}: must be between 0 and 1, got {getattr(self, name)}")
        if self.precision is not None:
            try:
                check_precision(self.precision)
            except PrecisionError as err:
                raise ConfigError(str(err)) from None
        if not all(0 <= a <= 1 for a in self.wise_alphas):
            raise ConfigError(f"wise_alphas: every alpha must be in [0, 1], got {self.wise_alphas}")
        self._check_optimisation()

    def _check_optimisation(self) -> None:
        for name in ("lr", "lr_head"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name}: must be a positive number, got {value}")
        for name in ("weight_decay", "grad_clip"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ConfigError(f"{name}: must be a number >= 0, got {getattr(self, name)}")
        if self.patience < 1:
            raise ConfigError(f"patience: must be at least 1 (epochs without improvement before stopping), "
                              f"got {self.patience}")
        for name in ("warmup_steps", "unlocked_image_groups", "unlocked_text_layers"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: must be at least 0, got {getattr(self, name)}")


_FIELDS = {f.name: f for f in dataclasses.fields(FinetuneCfg)}
_HINTS = typing.get_type_hints(FinetuneCfg)


class _Mismatch(Exception):
    pass


def _coerce(value, hint):
    """``value`` as type ``hint`` (YAML scalars are lenient: 1 is a float, 1e-4 may come as a
    string, a scalar is a one-item list); _Mismatch when it cannot be."""
    is_union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    for kind in typing.get_args(hint) if is_union else (hint,):
        origin = typing.get_origin(kind) or kind
        if value is None and kind is type(None):
            return None
        if origin is list and value is not None:
            (item,) = typing.get_args(kind)
            return [_coerce(v, item) for v in (value if isinstance(value, list) else [value])]
        if origin is float and not isinstance(value, bool) and isinstance(value, (int, float, str)):
            try:  # YAML 1.1 reads 1e-4 (no dot) as a string
                return float(value)
            except ValueError:
                continue
        if origin in (int, str, bool) and type(value) is origin:
            return value
        if origin is str and isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    raise _Mismatch


def _check_type(key: str, value, source: str):
    hint = _HINTS[key]
    try:
        return _coerce(value, hint)
    except _Mismatch:
        if value is None:
            raise ConfigError(f"{source}: key '{key}': must not be empty") from None
        raise ConfigError(f"{source}: key '{key}': expected {hint}, got {value!r}") from None


def parse_overrides(overrides) -> dict:
    """``["epochs=3", "prompts=[a.yaml, b.yaml]"]`` -> dict, values parsed as YAML scalars/lists."""
    out = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected key=value")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({err.problem})") from None
    return out


def load_config(path: str | os.PathLike | None = None, overrides=()) -> FinetuneCfg:
    """Defaults, then the YAML file, then ``key=value`` overrides (paths are taken as written:
    relative to the working directory, or absolute)."""
    values: dict = {}
    source = "defaults"
    if path is not None:
        found = resolve(path, "configs")
        if found is None:
            raise ConfigError(not_found(path, "configs"))
        source = str(found)
        loaded = read_yaml(found, ConfigError) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of settings")
        values.update({k: (v, source) for k, v in loaded.items()})
    values.update({k: (v, "--set") for k, v in parse_overrides(overrides).items()})
    checked = {}
    for key, (value, where) in values.items():
        if key not in _FIELDS:
            raise ConfigError(f"{where}: unknown key '{key}' (known: {', '.join(_FIELDS)})")
        checked[key] = _check_type(key, value, where)
    return FinetuneCfg(**checked)


def config_dict(cfg: FinetuneCfg) -> dict:
    return dataclasses.asdict(cfg)
