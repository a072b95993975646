"""Training configuration: one small dataclass per concern (the catalogue, the split, the towers,
the task, the optimisation, the evaluation, the runtime), composed in :class:`FinetuneCfg`, as
OpenCLIP composes ``CLIPVisionCfg`` and ``CLIPTextCfg``. Defaults live here; a YAML recipe
(``configs/*.yaml``) overrides them and ``key=value`` strings override the recipe.

A key is written flat (``epochs: 3``: every key belongs to one section) or within its section
(``optim: {epochs: 3}``, ``--set optim.epochs=3``). Each section checks its own fields;
:class:`FinetuneCfg` checks what one section asks of another.
"""
from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field

import yaml

from ..defaults import DEVICE, TITLE_WEIGHT
from ..fileio import read_yaml
from ..fusion import INPUTS
from ..precision import PrecisionError, check_precision
from ..shipped import not_found, resolve

CAPTIONS = ("label", "template", "title")


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the file or key."""


def _paths_as_text(section) -> None:
    """Paths given from Python (pathlib) are stored as text so the resolved config saves as YAML."""
    for name, value in vars(section).items():
        if isinstance(value, os.PathLike):
            setattr(section, name, os.fspath(value))


def _check_at_least(section, names, least: int) -> None:
    for name in names:
        if getattr(section, name) < least:
            raise ConfigError(f"{name}: must be at least {least}, got {getattr(section, name)}")


def _check_share(section, names) -> None:
    for name in names:
        if not 0 <= getattr(section, name) <= 1:
            raise ConfigError(f"{name}: must be between 0 and 1, got {getattr(section, name)}")


@dataclass
class CatalogueCfg:
    """The catalogue and the attributes read from it (``clipft.catalogue``, ``clipft.prompts``)."""

    data: str = ""  # catalogue CSV
    prompts: list[str] = field(default_factory=list)  # one prompt file per attribute
    image_column: str | None = None
    id_column: str | None = None
    title_column: str | None = None
    image_dir: str | None = None
    sep: str | None = None  # the CSV's separator (default: the one its header uses; tab for .tsv)
    limit: int | None = None  # a seeded sample of the catalogue, for quick runs
    skip_bad: bool = False

    def __post_init__(self) -> None:
        _paths_as_text(self)
        self.prompts = [os.fspath(p) for p in self.prompts]


@dataclass
class SplitCfg:
    """Train/validation/test rows (``clipft.training.splits``) and the training examples drawn."""

    groups: str | None = None  # CSV with id,group (e.g. groups.csv), or a column name of the catalogue
    duplicate_threshold: float = 0.95  # cosine of mean-centred image features above which photos share a group
    split_column: str | None = None  # a column with train/val/test, instead of a random split
    splits_from: str | None = None  # splits.csv of an earlier run (e.g. the alignment): reuse its split
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    shots: int | None = None  # training examples per class (None: the whole train split)

    def __post_init__(self) -> None:
        _paths_as_text(self)
        for name in ("val_fraction", "test_fraction"):
            if not 0 < getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be between 0 and 1, got {getattr(self, name)}")
        if self.val_fraction + self.test_fraction >= 1:
            raise ConfigError("val_fraction + test_fraction must leave rows for training")
        if self.shots is not None and self.shots < 1:
            raise ConfigError(f"shots: must be at least 1, got {self.shots}")


@dataclass
class TowersCfg:
    """The model and what of it trains (``clipft.training.weights.lock_towers``)."""

    model: str = "lite0-minilm"
    pretrained: str | None = None
    lock_image: bool = True
    unlocked_image_groups: int = 0  # with lock_image: leave the last N layer groups of the image tower trainable
    lock_text: bool = False
    unlocked_text_layers: int = 0  # with lock_text: leave the last N text layers trainable
    augment: bool = False  # cached features: a mirrored copy half the time; photos: OpenCLIP's training transform

    def __post_init__(self) -> None:
        _paths_as_text(self)
        _check_at_least(self, ("unlocked_image_groups", "unlocked_text_layers"), 0)


@dataclass
class TaskCfg:
    """What is matched with what: a product (``clipft.fusion``: its photo, its title, or both
    fused) with a caption (the bare class value, the prompt file's templates, or the title)."""

    captions: str = "label"
    hard_negatives: bool = False  # title captions: add a counterfactual title per photo, one class word swapped
    inputs: str | None = None  # image | text | fusion (default: fusion when the catalogue has titles)
    title_weight: float = TITLE_WEIGHT  # fusion: weight of the title embedding (training, and scoring unless tuned)

    def __post_init__(self) -> None:
        if self.captions not in CAPTIONS:
            raise ConfigError(f"captions: {self.captions!r} is not one of {', '.join(CAPTIONS)}")
        if self.inputs is not None and self.inputs not in INPUTS:
            raise ConfigError(f"inputs: {self.inputs!r} is not one of {', '.join(INPUTS)}")
        if self.captions == "title" and self.inputs not in (None, "image"):
            raise ConfigError(f"inputs: {self.inputs!r} cannot be used with captions=title (the title is the caption)")
        _check_share(self, ("title_weight",))


@dataclass
class OptimCfg:
    """The training loop (``clipft.training.loop``) and its optimiser (``clipft.training.optim``)."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-5  # pretrained tower weights
    lr_head: float | None = None  # projections and logit scale (default: lr)
    lr_words: float = 3e-3  # a bag of title words (clipft.title_words): embeddings trained from scratch
    weight_decay: float = 0.1
    warmup_steps: int = 20
    grad_clip: float = 1.0  # gradient norm limit (0: no clipping)
    patience: int = 3  # epochs without a lower validation loss before stopping
    min_epoch_steps: int = 1  # per task: a few-shot epoch is lengthened to at least this many batches
    validate_start: bool = False  # also score the starting weights (epoch 0): they are kept if no epoch beats them
    title_dropout: float = 0.0  # probability that a training example's title is blanked (seeded)

    def __post_init__(self) -> None:
        _check_at_least(self, ("epochs", "batch_size", "min_epoch_steps"), 1)
        _check_share(self, ("title_dropout",))
        for name in ("lr", "lr_head", "lr_words"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name}: must be a positive number, got {value}")
        for name in ("weight_decay", "grad_clip"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ConfigError(f"{name}: must be a number >= 0, got {getattr(self, name)}")
        if self.patience < 1:
            raise ConfigError(f"patience: must be at least 1 (epochs without improvement before stopping), "
                              f"got {self.patience}")
        _check_at_least(self, ("warmup_steps",), 0)


@dataclass
class EvalCfg:
    """How trained weights are scored and chosen (``clipft.training.evaluation``, WiSE-FT)."""

    tune_title_weight: bool = True  # fusion: per attribute, score with the weight that is best on validation
    prior_correction: bool = True  # add the log class frequencies of the training labels to fine-tuned scores
    calibrated_val_loss: bool = True  # choose epochs on each attribute's validation loss after temperature scaling
    wise_alphas: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])

    def __post_init__(self) -> None:
        if not all(0 <= a <= 1 for a in self.wise_alphas):
            raise ConfigError(f"wise_alphas: every alpha must be in [0, 1], got {self.wise_alphas}")


@dataclass
class RuntimeCfg:
    """Where and how the run computes: seed, device, batches of the frozen pass, cache."""

    seed: int = 0
    device: str = DEVICE
    eval_batch_size: int = 256
    workers: int = 0
    cache_dir: str | None = None
    precision: str | None = None  # frozen encoding pass: fp32 | amp | amp_bf16 | int8 (default: amp on GPU, else fp32)

    def __post_init__(self) -> None:
        _paths_as_text(self)
        _check_at_least(self, ("eval_batch_size",), 1)
        if self.precision is not None:
            try:
                check_precision(self.precision)
            except PrecisionError as err:
                raise ConfigError(str(err)) from None


@dataclass
class FinetuneCfg:
    """A training run's settings, one section per concern; a function takes the section it reads."""

    catalogue: CatalogueCfg = field(default_factory=CatalogueCfg)
    split: SplitCfg = field(default_factory=SplitCfg)
    towers: TowersCfg = field(default_factory=TowersCfg)
    task: TaskCfg = field(default_factory=TaskCfg)
    optim: OptimCfg = field(default_factory=OptimCfg)
    eval: EvalCfg = field(default_factory=EvalCfg)
    runtime: RuntimeCfg = field(default_factory=RuntimeCfg)

    def __post_init__(self) -> None:
        if self.task.captions != "title" and not self.catalogue.prompts:
            raise ConfigError("prompts: give at least one prompt file (captions are class labels)")


SECTIONS: dict[str, type] = typing.get_type_hints(FinetuneCfg)  # section name -> its dataclass
_SECTION_OF = {f.name: name for name, kind in SECTIONS.items() for f in dataclasses.fields(kind)}  # key -> section
_HINTS = {key: hint for kind in SECTIONS.values() for key, hint in typing.get_type_hints(kind).items()}


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


def _flat_key(key: str, source: str) -> str:
    """``epochs`` or ``optim.epochs`` -> ``epochs``; an unknown or misplaced key is refused."""
    section, dot, name = key.rpartition(".")
    if name not in _SECTION_OF:
        raise ConfigError(f"{source}: unknown key '{key}' (known: {', '.join(_SECTION_OF)})")
    if dot and section != _SECTION_OF[name]:
        raise ConfigError(f"{source}: unknown key '{key}' ({name} belongs to {_SECTION_OF[name]}: "
                          f"{_SECTION_OF[name]}.{name})")
    return name


def _flat_settings(settings: dict, source: str) -> dict:
    """Settings written flat (``epochs``), dotted (``optim.epochs``) or by section
    (``optim: {epochs: 3}``) as ``{flat key: value}``; a key given twice keeps its last value."""
    out = {}
    for key, value in settings.items():
        key = str(key)
        if key in SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: key '{key}': expected a mapping of {key} settings, got {value!r}")
            out.update({_flat_key(f"{key}.{k}", source): v for k, v in value.items()})
        else:
            out[_flat_key(key, source)] = value
    return out


def build_config(settings: dict, source: str = "settings") -> FinetuneCfg:
    """A :class:`FinetuneCfg` from settings (keys flat, dotted or by section, as in a YAML file),
    each value checked against its field's type; ``source`` names them in errors."""
    return _assemble({key: (value, source) for key, value in _flat_settings(settings, source).items()})


def _assemble(values: dict) -> FinetuneCfg:
    """``{flat key: (value, source)}`` -> the sections -> :class:`FinetuneCfg`."""
    parts: dict[str, dict] = {name: {} for name in SECTIONS}
    for key, (value, source) in values.items():
        parts[_SECTION_OF[key]][key] = _check_type(key, value, source)
    return FinetuneCfg(**{name: SECTIONS[name](**fields) for name, fields in parts.items()})


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
    relative to the working directory, or absolute). Keys are flat or by section, in both."""
    values: dict = {}
    if path is not None:
        found = resolve(path, "configs")
        if found is None:
            raise ConfigError(not_found(path, "configs"))
        source = str(found)
        loaded = read_yaml(found, ConfigError) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of settings")
        values.update({k: (v, source) for k, v in _flat_settings(loaded, source).items()})
    values.update({k: (v, "--set") for k, v in _flat_settings(parse_overrides(overrides), "--set").items()})
    return _assemble(values)


def config_dict(cfg: FinetuneCfg) -> dict:
    """By section, as config.yaml holds it."""
    return dataclasses.asdict(cfg)


def flat_config(cfg: FinetuneCfg) -> dict:
    """Every key at the top level, as last.pt records it (and as older runs recorded it)."""
    return {key: value for section in config_dict(cfg).values() for key, value in section.items()}
