"""Zero-shot classification from prompts, with OpenCLIP's prompt ensembling."""
from __future__ import annotations

import numpy as np
import torch
from sklearn.exceptions import NotFittedError

from .embeddings import encode_texts
from .prompts import PromptSpec


def l2_normalize(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True).clip(min=1e-12)


def ensemble_prompts(prompt_embeddings: list[np.ndarray]) -> np.ndarray:
    """One unit vector per class: the normalised mean of its normalised prompt embeddings."""
    return l2_normalize(np.stack([l2_normalize(e).mean(axis=0) for e in prompt_embeddings]))


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class ZeroShotClassifier:
    """scikit-learn-style classifier whose ``fit`` needs no labels: it builds the class
    weights from the prompt file (templates x synonyms per class).

    ``predict_proba`` takes image embeddings as returned by ``encode_images`` (or fused
    product embeddings, see :mod:`clipft.fusion`). ``text_fn`` (strings -> embeddings, see
    :mod:`clipft.text_features`) replaces the cached ``encode_texts`` while a model trains.
    """

    def __init__(self, model, tokenizer, spec: PromptSpec, cache_dir=None, device="cpu", cache: bool = True,
                 text_fn=None):
        self.model = model
        self.tokenizer = tokenizer
        self.spec = spec
        self.cache_dir = cache_dir
        self.device = device
        self.cache = cache
        self.text_fn = text_fn

    def fit(self, X=None, y=None) -> "ZeroShotClassifier":
        prompts = [self.spec.prompts_for(value) for value in self.spec.classes]
        texts = [p for group in prompts for p in group]
        if self.text_fn is not None:
            with torch.no_grad():
                flat = self.text_fn(texts).float().cpu().numpy()
        else:
            flat = encode_texts(self.model, self.tokenizer, texts, self.cache_dir, self.device, cache=self.cache)
        bounds = np.cumsum([0] + [len(g) for g in prompts])
        self.classes_ = np.array(self.spec.classes, dtype=object)
        self.weights_ = ensemble_prompts([flat[a:b] for a, b in zip(bounds[:-1], bounds[1:])])
        self.logit_scale_ = float(self.model.logit_scale.detach().exp().cpu())
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        if not hasattr(self, "weights_"):
            raise NotFittedError("ZeroShotClassifier is not fitted yet: call fit() first")
        return self.logit_scale_ * l2_normalize(np.asarray(X, dtype=np.float32)) @ self.weights_.T

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return softmax(self.decision_function(X))

    def predict(self, X: np.ndarray) -> np.ndarray:
        scores = self.decision_function(X)
        return self.classes_[scores.argmax(axis=1)]
