"""How a labeller scores one attribute. Two kinds of head with one interface:

- :class:`PromptHead`: the model's own text tower scores the prompt file's classes (zero-shot
  prompts, or the bare labels a fine-tuned model learnt), on the product embedding with the
  title fused in at ``title_weight``;
- :class:`ProbeHead`: a fitted scikit-learn classifier scores the product features.

Both give ``spec``, ``classes``, ``calibration``, ``features(parts, inputs)`` (what the head
scores, which ``audit`` cross-validates on) and ``scorer(model, text_fn)`` (product parts ->
uncalibrated class scores). Heads are frozen: a re-calibrated head is a new head.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .calibration import Calibration
from .defaults import TITLE_WEIGHT
from .fusion import ProductParts, combine
from .probe import classifier_logits, probe_matrix
from .prompts import PromptSpec
from .zeroshot import ZeroShotClassifier

Scorer = Callable[[ProductParts, str], np.ndarray]  # (parts, inputs) -> (n, n_classes) scores


@dataclass(frozen=True, eq=False)
class PromptHead:
    spec: PromptSpec
    captions: str = "label"  # label: the bare class names a fine-tuned model learnt; template: the prompt file's
    title_weight: float = TITLE_WEIGHT
    calibration: Calibration = field(default_factory=Calibration)
    log_prior: np.ndarray | None = None  # fine-tuned on balanced batches: the catalogue's log class odds, added back

    @property
    def classes(self) -> np.ndarray:
        return np.array(self.spec.classes, dtype=object)

    def features(self, parts: ProductParts, inputs: str) -> np.ndarray:
        return combine(parts, inputs, self.title_weight).float().numpy()

    def scorer(self, model, text_fn) -> Scorer:
        spec = self.spec.bare() if self.captions == "label" else self.spec
        classifier = ZeroShotClassifier(model, None, spec, text_fn=text_fn, log_prior=self.log_prior).fit()
        return lambda parts, inputs: classifier.decision_function(self.features(parts, inputs))

    def calibrated(self, calibration: Calibration) -> "PromptHead":
        return dataclasses.replace(self, calibration=calibration)


@dataclass(frozen=True, eq=False)
class ProbeHead:
    spec: PromptSpec
    classifier: object  # a fitted scikit-learn classifier on probe_matrix features
    calibration: Calibration = field(default_factory=Calibration)

    @property
    def classes(self) -> np.ndarray:
        return np.asarray(self.classifier.classes_, dtype=object)

    def features(self, parts: ProductParts, inputs: str) -> np.ndarray:
        return probe_matrix(parts, inputs)

    def scorer(self, model, text_fn) -> Scorer:
        return lambda parts, inputs: classifier_logits(self.classifier, self.features(parts, inputs))

    def calibrated(self, calibration: Calibration) -> "ProbeHead":
        return dataclasses.replace(self, calibration=calibration)


Head = PromptHead | ProbeHead
