"""A finished ``finetune`` or ``probe`` run as a labeller: reload it and label products.

A run folder holds ``labeller.json`` (what is in the folder, below), the model's weights as
``labeller.safetensors`` (the chosen model: the best epoch, WiSE-FT alpha applied), per
attribute the classes as trained and how they are scored, probe classifiers as ``.skops`` files,
and ``calibration.npz`` (validation logits and labels, from which temperatures and thresholds
are fitted). Nothing in it is a pickle: loading a labeller executes no code from the folder.

``labeller.json``::

    format: clipft-labeller, version: 1
    kind: finetune | probe
    model: architecture name;  weights: labeller.safetensors
    inputs: image | text | fusion;  title_column;  batch_size (scoring batches)
    attributes: {name: {prompts: the prompt file as trained, captions: label | template,
                        title_weight, classifier: null | {kind, file}, calibration: {...},
                        log_prior: null | per class, the log prior its scores add}}
    reproduces: the rows of comparison.csv / probe.csv that this labeller scores as
"""
from __future__ import annotations

import contextlib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from scipy.special import softmax

from .cache.encoding import encode_catalogue
from .cache.image_features import CachedImageFeatures, FrozenEncoder, image_trunk_and_head
from .cache.text_features import text_features
from .calibration import Calibration, calibrate
from .catalogue import Catalogue, to_rgb
from .fusion import ProductFeatures, ProductParts, batched_parts, combine
from .models import load_model
from .probe import classifier_logits, probe_matrix
from .prompts import PromptSpec, load_prompt_specs, parse_prompt_spec
from .zeroshot import ZeroShotClassifier

FORMAT = "clipft-labeller"
LABELLER_FILE = "labeller.json"
WEIGHTS_FILE = "labeller.safetensors"
CALIBRATION_FILE = "calibration.npz"
# The exact types beyond skops' own defaults that the classifiers clipft saves are made of
# (make_classifier's MLP optimiser and forest trees). Exact names, never a prefix: skops reports
# builtins.exec as "builtins.exec", and a prefix such as "builtins." would trust it.
TRUSTED_TYPES = frozenset({"sklearn.neural_network._stochastic_optimizers.AdamOptimizer", "sklearn.tree._tree.Tree"})


class LabellerError(ValueError):
    """A folder that is not a finished run, or a labeller that cannot be used."""


def spec_to_dict(spec: PromptSpec) -> dict:
    return {"attribute": spec.attribute, "column": spec.column, "templates": list(spec.templates),
            "classes": {c: list(spec.synonyms[c]) for c in spec.classes}}


@dataclass
class Head:
    """How one attribute is scored: the prompt classifier of the run's model (``classifier``
    None) or a probe classifier on the product features."""

    spec: PromptSpec
    captions: str = "label"  # label | template (prompt heads)
    title_weight: float = 0.5
    classifier: object = None  # a fitted scikit-learn classifier (probe heads)
    calibration: Calibration | None = None
    log_prior: np.ndarray | None = None  # prompt heads of a fine-tuned run: added to their scores

    def prompt_classifier(self, model, text_fn) -> ZeroShotClassifier:
        spec = self.spec.bare() if self.captions == "label" else self.spec
        return ZeroShotClassifier(model, None, spec, text_fn=text_fn, log_prior=self.log_prior).fit()

    @property
    def classes(self) -> np.ndarray:
        if self.classifier is not None:
            return np.asarray(self.classifier.classes_, dtype=object)
        return np.array(self.spec.classes, dtype=object)


def head_logits(head: Head, parts: ProductParts, inputs: str, prompt_clf: ZeroShotClassifier | None) -> np.ndarray:
    """Uncalibrated scores of every class of ``head`` (n, n_classes)."""
    if head.classifier is not None:
        return classifier_logits(head.classifier, probe_matrix(parts, inputs))
    return prompt_clf.decision_function(combine(parts, inputs, head.title_weight).numpy())


def run_file(run_dir: Path, name) -> Path:
    """A file that labeller.json names: a plain file name inside the run folder, never a path
    that leaves it (``../``, an absolute path, a symlink to elsewhere)."""
    manifest = run_dir / LABELLER_FILE
    if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
        raise LabellerError(f"{manifest}: names the file {name!r}; a labeller's files must be plain names "
                            f"inside its run folder")
    path = run_dir / name
    if not path.resolve().is_relative_to(run_dir.resolve()):
        raise LabellerError(f"{manifest}: {name} is a link that leaves the run folder; refused")
    if not path.is_file():  # missing, or a FIFO or device that would block or never end
        raise LabellerError(f"{path}: missing or not a regular file; the run did not finish")
    return path


@contextlib.contextmanager
def reading(path: Path, what: str):
    """Any failure to read a file of the run folder becomes one line naming it: a truncated
    or corrupt file is a damaged run, not a traceback."""
    try:
        yield
    except LabellerError:
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError, EOFError, RuntimeError,
            zipfile.BadZipFile, SafetensorError) as err:
        raise LabellerError(f"{path}: not a readable {what} ({type(err).__name__}: {err}); the run folder is "
                            f"damaged: train the run again, or restore it from a copy") from None


def _load_classifier(path: Path):
    import skops.io as sio

    with reading(path, "classifier"):
        refused = [t for t in sio.get_untrusted_types(file=path) if t not in TRUSTED_TYPES]
    if refused:
        raise LabellerError(f"{path}: refused to load types that clipft never saves: {', '.join(refused)} "
                            f"(a classifier file cannot run code here)")
    with reading(path, "classifier"):
        return sio.load(path, trusted=sorted(TRUSTED_TYPES))


def _log_prior(entry: dict, attribute: str, run_dir: Path) -> np.ndarray | None:
    prior = entry.get("log_prior")
    if prior is None:
        return None
    if len(prior) != len(entry["prompts"]["classes"]):
        raise LabellerError(f"{run_dir / LABELLER_FILE}: {attribute}: log_prior has {len(prior)} values for "
                            f"{len(entry['prompts']['classes'])} classes")
    return np.asarray(prior, dtype=np.float32)


def read_manifest(run_dir: Path) -> dict:
    manifest = run_dir / LABELLER_FILE
    if not manifest.is_file():
        hint = " (an unfinished or older run: run it again to finish it)" if (run_dir / "config.yaml").is_file() else ""
        raise LabellerError(f"{run_dir}: not a finished finetune or probe run: no {LABELLER_FILE}{hint}")
    try:
        data = json.loads(run_file(run_dir, LABELLER_FILE).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise LabellerError(f"{manifest}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise LabellerError(f"{manifest}: not a clipft labeller (a JSON {type(data).__name__}, not an object)")
    if data.get("format") != FORMAT or data.get("version") != 1:
        raise LabellerError(f"{manifest}: not a clipft labeller (format {data.get('format')!r}, version "
                            f"{data.get('version')!r})")
    for name in (WEIGHTS_FILE, CALIBRATION_FILE):  # before the model is built: a missing file fails fast
        run_file(run_dir, name)
    missing = [key for key in ("model", "inputs", "attributes") if key not in data]
    if missing or not isinstance(data["attributes"], dict):
        raise LabellerError(f"{manifest}: no {', '.join(missing) or 'attributes object'}; the file is damaged: "
                            f"train the run again, or restore it from a copy")
    return data


def _head(run_dir: Path, name: str, entry: dict) -> Head:
    """One attribute's head as labeller.json describes it; its classifier file must lie in the run folder."""
    classifier = entry.get("classifier")
    return Head(parse_prompt_spec(entry["prompts"], f"{run_dir / LABELLER_FILE}: {name}"),
                entry.get("captions", "label"), float(entry.get("title_weight", 0.5)),
                _load_classifier(run_file(run_dir, classifier["file"])) if classifier else None,
                Calibration.from_dict(entry["calibration"]), _log_prior(entry, name, run_dir))


class Labeller:
    """Labels products as the run scored its test split: ``predict_proba`` / ``predict`` on a
    catalogue, or on PIL images with optional titles."""

    def __init__(self, model, preprocess, tokenizer, heads: dict[str, Head], inputs: str, manifest: dict,
                 calibration_data: dict, device="cpu", cache_dir=None):
        self.model, self.preprocess, self.tokenizer = model, preprocess, tokenizer
        self.heads, self.inputs, self.manifest = heads, inputs, manifest
        self.calibration_data, self.device, self.cache_dir = calibration_data, device, cache_dir
        self.batch_size = int(manifest.get("batch_size", 256))
        self.title_column = manifest.get("title_column")
        self.trunk, self.head = image_trunk_and_head(model)
        self.text_fn = text_features(model, tokenizer, device, cache_dir)
        with torch.no_grad():
            self.prompt_classifiers = {a: h.prompt_classifier(model, self.text_fn)
                                       for a, h in heads.items() if h.classifier is None}

    @classmethod
    def load(cls, run_dir, device: str = "cpu", cache_dir=None) -> "Labeller":
        run_dir = Path(run_dir)
        manifest = read_manifest(run_dir)
        model, preprocess, tokenizer = load_model(manifest["model"], "random", device)
        weights = run_file(run_dir, WEIGHTS_FILE)
        with reading(weights, f"weights file for {manifest['model']}"):
            model.load_state_dict(load_file(weights, device=str(device)))
        model.eval().requires_grad_(False)  # frozen: the cached fast paths apply to both towers
        with reading(run_dir / LABELLER_FILE, "labeller manifest"):
            heads = {name: _head(run_dir, name, entry) for name, entry in manifest["attributes"].items()}
        calibration = run_file(run_dir, CALIBRATION_FILE)
        with reading(calibration, "calibration file"), np.load(calibration, allow_pickle=False) as data:
            calibration_data = {k: data[k] for k in data.files}
        return cls(model, preprocess, tokenizer, heads, manifest["inputs"], manifest, calibration_data, device, cache_dir)

    @classmethod
    def from_prompts(cls, prompt_files, model: str, pretrained: str | None = None, device: str = "cpu",
                     cache_dir=None, title_weight: float = 0.5) -> "Labeller":
        """Zero-shot: the prompt files' ensembles on a pretrained model, photo and title fused
        (a product without a title is scored on its photo). Nothing is calibrated, so no label
        is auto-accepted: every one goes to review."""
        clip, preprocess, tokenizer = load_model(model, pretrained, device)
        clip.eval().requires_grad_(False)
        heads = {spec.attribute: Head(spec, "template", title_weight, None, Calibration())
                 for spec in load_prompt_specs(prompt_files)}
        manifest = {"model": model, "pretrained": pretrained, "inputs": "fusion", "command": "zeroshot"}
        return cls(clip, preprocess, tokenizer, heads, "fusion", manifest, {}, device, cache_dir)

    @property
    def attributes(self) -> list[str]:
        return list(self.heads)

    def with_target_precision(self, target_precision: float) -> "Labeller":
        """Thresholds refitted on the run's validation split for another target precision."""
        for name, head in self.heads.items():
            head.calibration = calibrate(self.calibration_data[f"{name}.logits"], self.calibration_data[f"{name}.y"],
                                         target_precision)
        return self

    def catalogue_features(self, catalogue: Catalogue, skip_bad: bool = False, batch_size: int = 64,
                           workers: int = 0, progress: bool = True):
        """(product features, usable rows, skipped rows, photos encoded) of a catalogue, photos
        through the embedding cache (the image trunk's output, as training cached it)."""
        if self.inputs == "text":
            return ProductFeatures(None, self.text_fn, catalogue.titles(), "text"), np.arange(len(catalogue)), [], 0
        encoding = encode_catalogue(FrozenEncoder(self.trunk), self.preprocess, catalogue, skip_bad, self.cache_dir,
                                    self.device, batch_size, workers, progress)
        trunk = np.full((len(catalogue), encoding.embeddings.shape[1]), np.nan, dtype=np.float32)
        trunk[encoding.rows] = encoding.embeddings
        features = ProductFeatures(CachedImageFeatures(trunk, self.head, self.device), self.text_fn,
                                   catalogue.titles(), self.inputs)
        return features, encoding.rows, encoding.skipped, encoding.encoded

    def image_features(self, images, titles=None) -> ProductFeatures:
        """Product features of PIL images (and their titles, or None each)."""
        titles = list(titles) if titles is not None else [None] * len(images)

        def image_fn(rows):
            batch = torch.stack([self.preprocess(to_rgb(images[int(r)])) for r in rows]).to(self.device)
            return self.model.encode_image(batch.to(memory_format=torch.channels_last))

        return ProductFeatures(image_fn if self.inputs != "text" else None, self.text_fn,
                               [t if t and str(t).strip() else None for t in titles], self.inputs)

    @torch.no_grad()
    def logits(self, features: ProductFeatures, rows) -> dict[str, np.ndarray]:
        """Uncalibrated class scores per attribute for catalogue ``rows`` of ``features``."""
        rows = np.asarray(rows, dtype=int)
        parts = batched_parts(features, rows, self.batch_size)
        return {a: head_logits(h, parts, self.inputs, self.prompt_classifiers.get(a)) for a, h in self.heads.items()}

    def proba_from_logits(self, logits: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {a: softmax(v / self.heads[a].calibration.temperature, axis=1) for a, v in logits.items()}

    def predict_proba(self, X, titles=None, **encode_options) -> dict[str, np.ndarray]:
        """Calibrated probabilities per attribute (columns: ``self.heads[a].classes``) for a
        :class:`Catalogue` (its usable rows, in order) or a list of PIL images."""
        if isinstance(X, Catalogue):
            features, rows, _, _ = self.catalogue_features(X, **encode_options)
        else:
            features, rows = self.image_features(X, titles), np.arange(len(X))
        return self.proba_from_logits(self.logits(features, rows))

    def predict(self, X, titles=None, **encode_options) -> dict[str, np.ndarray]:
        return {a: self.heads[a].classes[p.argmax(axis=1)] for a, p in self.predict_proba(X, titles, **encode_options).items()}
