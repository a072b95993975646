"""Zero-shot classification from prompts (OpenCLIP's prompt ensembling): the class weights a
prompt head (:mod:`clipft.heads`) scores products against. A catalogue is labelled by a
:class:`clipft.labeller.Labeller` built from prompt files."""
from __future__ import annotations

import numpy as np
import torch
from scipy.special import softmax
from sklearn.exceptions import NotFittedError

from .cache.encoding import encode_texts
from .prompts import PromptSpec, check_prompt_lengths
from .vectors import l2_normalize


def ensemble_prompts(prompt_embeddings: list[np.ndarray]) -> np.ndarray:
    """One unit vector per class: the normalised mean of its normalised prompt embeddings."""
    return l2_normalize(np.stack([l2_normalize(e).mean(axis=0) for e in prompt_embeddings]))


class ZeroShotClassifier:
    """scikit-learn-style classifier whose ``fit`` needs no labels: it builds the class
    weights from the prompt file (templates x synonyms per class).

    ``predict_proba`` takes image embeddings as returned by ``encode_images`` (or fused
    product embeddings, see :mod:`clipft.fusion`). ``text_fn`` (strings -> embeddings, see
    :mod:`clipft.cache.text_features`) replaces the cached ``encode_texts`` while a model trains.

    ``log_prior`` (per class, in the prompt file's order) is added to the scores of a model
    fine-tuned on balanced batches: such a model learns every class as equally likely, and
    adding the log class frequencies of its training labels gives back the catalogue's odds
    (post-hoc logit adjustment, Menon et al. 2021).
    """

    def __init__(self, model, tokenizer, spec: PromptSpec, cache_dir=None, device="cpu", cache: bool = True,
                 text_fn=None, log_prior: np.ndarray | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.spec = spec
        self.cache_dir = cache_dir
        self.device = device
        self.cache = cache
        self.text_fn = text_fn
        self.log_prior = log_prior

    def fit(self, X=None, y=None) -> "ZeroShotClassifier":
        # the text features of a training run (clipft.cache.text_features) carry their tokenizer
        tokenizer = self.tokenizer if self.text_fn is None else getattr(self.text_fn, "tokenizer", None)
        check_prompt_lengths(self.spec, tokenizer)
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
        X = np.asarray(X, dtype=np.float32)
        # cosine = (x . w) / |x|: scaling the scores, not a normalised copy of X, halves the time
        norms = np.linalg.norm(X, axis=-1, keepdims=True).clip(min=1e-12)
        scores = (X @ self.weights_.T) * (self.logit_scale_ / norms)
        return scores if self.log_prior is None else scores + np.asarray(self.log_prior, dtype=np.float32)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return softmax(self.decision_function(X), axis=1)

    def predict(self, X: np.ndarray) -> np.ndarray:
        scores = self.decision_function(X)
        return self.classes_[scores.argmax(axis=1)]
