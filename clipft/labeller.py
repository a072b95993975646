"""A labeller: a model and one head per attribute (:mod:`clipft.heads`) that labels products
with calibrated probabilities, the only scorer in clipft. ``zeroshot`` builds one from prompt
files (:meth:`Labeller.zero_shot`), ``predict``, ``audit`` and the app load a finished
``finetune`` or ``probe`` run (:meth:`Labeller.load`; the run folder's format is in
:mod:`clipft.labeller_files`). A labeller is built, never changed: choosing attributes or
another target precision gives a new one."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from scipy.special import softmax

from .cache.encoding import encode_catalogue, encode_texts
from .cache.image_features import CachedImageFeatures, FrozenEncoder, image_trunk_and_head
from .cache.text_features import CachedTextFeatures, text_features
from .calibration import GUARANTEE, Calibration, calibrate
from .catalogue import Catalogue, to_rgb
from .defaults import TITLE_WEIGHT
from .fusion import ProductFeatures, batched_parts
from .heads import Head, PromptHead
from .labeller_files import LabellerError, load_weights, read_labeller
from .models import load_model
from .prior_shift import reweighted, split_prior
from .prompts import PromptSpec, load_prompt_specs


class CachedTexts:
    """Text embeddings of a frozen OpenCLIP text tower through the embedding cache: titles and
    prompts are encoded once per model, whatever tower it has."""

    def __init__(self, model, tokenizer, device, cache_dir):
        self.model, self.tokenizer, self.device, self.cache_dir = model, tokenizer, device, cache_dir

    def __call__(self, texts) -> torch.Tensor:
        return torch.from_numpy(encode_texts(self.model, self.tokenizer, list(texts), self.cache_dir, self.device))


def frozen_text_features(model, tokenizer, device, cache_dir):
    """The cached pooled transformer outputs of a Hugging Face tower, else whole embeddings cached."""
    live = text_features(model, tokenizer, device, cache_dir)
    return live if isinstance(live, CachedTextFeatures) else CachedTexts(model, tokenizer, device, cache_dir)


class Labeller:
    """Labels products as its run scored them: ``predict_proba`` / ``predict`` on a catalogue,
    or on PIL images with optional titles. ``kind`` is zeroshot, finetune or probe; only a
    trained run is calibrated, so only its labels can be auto-accepted."""

    def __init__(self, model, preprocess, tokenizer, heads: dict[str, Head], inputs: str, manifest: dict,
                 calibration_data: dict | None = None, device="cpu", cache_dir=None,
                 priors: dict[str, np.ndarray] | None = None):
        self.model, self.preprocess, self.tokenizer = model, preprocess, tokenizer
        self.priors = priors or {}  # attribute -> the labelled catalogue's class prior (clipft.prior_shift)
        self.heads, self.inputs, self.manifest = dict(heads), inputs, manifest
        self.calibration_data, self.device, self.cache_dir = calibration_data or {}, device, cache_dir
        self.kind = manifest.get("kind", "zeroshot")
        self.batch_size = int(manifest.get("batch_size", 256))
        self.title_column = manifest.get("title_column")
        self.trunk, self.head = image_trunk_and_head(model)
        self.text_fn = frozen_text_features(model, tokenizer, device, cache_dir)
        with torch.no_grad():
            self.scorers = {a: h.scorer(model, self.text_fn) for a, h in self.heads.items()}

    @classmethod
    def load(cls, run_dir, device: str = "cpu", cache_dir=None) -> "Labeller":
        run_dir = Path(run_dir)
        contents = read_labeller(run_dir)
        model, preprocess, tokenizer = load_model(contents.manifest["model"], "random", device)
        load_weights(model, contents.weights, device, contents.manifest["model"])
        model.eval().requires_grad_(False)  # frozen: the cached fast paths apply to both towers
        return cls(model, preprocess, tokenizer, contents.heads, contents.manifest["inputs"], contents.manifest,
                   contents.calibration_data, device, cache_dir)

    @classmethod
    def zero_shot(cls, model, preprocess, tokenizer, specs: list[PromptSpec], inputs: str = "fusion",
                  title_weight: float = TITLE_WEIGHT, device="cpu", cache_dir=None, info: dict | None = None) -> "Labeller":
        """The prompt files' ensembles on a loaded model. Nothing is calibrated, so no label is
        auto-accepted: every one goes to review."""
        model.eval().requires_grad_(False)
        heads = {spec.attribute: PromptHead(spec, "template", title_weight) for spec in specs}
        return cls(model, preprocess, tokenizer, heads, inputs, {"kind": "zeroshot", **(info or {})}, None, device,
                   cache_dir)

    @classmethod
    def from_prompts(cls, prompt_files, model: str, pretrained: str | None = None, device: str = "cpu",
                     cache_dir=None, title_weight: float = TITLE_WEIGHT, inputs: str = "fusion") -> "Labeller":
        """:meth:`zero_shot` on the named model and prompt files (photo and title fused by
        default: a product without a title is scored on its photo)."""
        specs = load_prompt_specs(prompt_files)  # a bad prompt file stops before the model loads
        clip, preprocess, tokenizer = load_model(model, pretrained, device)
        return cls.zero_shot(clip, preprocess, tokenizer, specs, inputs, title_weight, device, cache_dir,
                             {"model": model, "pretrained": pretrained})

    @property
    def attributes(self) -> list[str]:
        return list(self.heads)

    @property
    def calibrated(self) -> bool:
        return self.kind != "zeroshot"

    def _with_heads(self, heads: dict[str, Head], priors: dict | None = None) -> "Labeller":
        priors = self.priors if priors is None else priors
        return type(self)(self.model, self.preprocess, self.tokenizer, heads, self.inputs, self.manifest,
                          self.calibration_data, self.device, self.cache_dir, {a: priors[a] for a in heads if a in priors})

    def split_prior(self, name: str) -> np.ndarray:
        """The class frequencies of the run's validation split, which its probabilities assume."""
        return split_prior(self.calibration_data.get(f"{name}.y", np.zeros(0, dtype=int)), len(self.heads[name].classes))

    def with_priors(self, priors: dict[str, np.ndarray]) -> "Labeller":
        """The labeller whose probabilities assume these class priors (per attribute) instead of
        its validation split's: a catalogue's own frequencies, estimated by :func:`clipft.prior_shift.em_prior`."""
        if not self.calibrated:
            raise LabellerError("a zero-shot labeller has no split whose class frequencies its probabilities assume")
        return self._with_heads(self.heads, priors)

    def select(self, attributes) -> "Labeller":
        """The labeller of ``attributes`` alone (each must be one it labels)."""
        unknown = [a for a in attributes if a not in self.heads]
        if unknown:
            raise LabellerError(f"--attributes: {', '.join(unknown)} not labelled here (it labels "
                                f"{', '.join(self.attributes)})")
        return self._with_heads({a: self.heads[a] for a in attributes})

    def with_target_precision(self, target_precision: float, guarantee: float = GUARANTEE) -> "Labeller":
        """The labeller with thresholds refitted on its run's validation split for another target
        precision, guaranteed with probability ``guarantee`` (:func:`clipft.calibration.calibrate`)."""
        if not self.calibrated:
            raise LabellerError("a zero-shot labeller has no validation split to set a target precision on")
        return self._with_heads({name: head.calibrated(self._recalibrated(name, target_precision, guarantee))
                                 for name, head in self.heads.items()})

    def _recalibrated(self, name: str, target_precision: float, guarantee: float) -> Calibration:
        calibration = calibrate(self.calibration_data[f"{name}.logits"], self.calibration_data[f"{name}.y"],
                                target_precision, guarantee, name)
        calibration.class_thresholds = self.heads[name].calibration.class_thresholds  # multi-valued: F1 thresholds
        return calibration

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
        parts = batched_parts(features, np.asarray(rows, dtype=int), self.batch_size)
        return {a: scorer(parts, self.inputs) for a, scorer in self.scorers.items()}

    def proba_from_logits(self, logits: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        proba = {a: softmax(v / self.heads[a].calibration.temperature, axis=1) for a, v in logits.items()}
        return {a: reweighted(p, self.split_prior(a), self.priors[a]) if a in self.priors else p
                for a, p in proba.items()}

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
