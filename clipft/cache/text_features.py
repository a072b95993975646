"""Where training and evaluation get text embeddings from (captions, prompts, titles).

The text-side twin of :mod:`clipft.cache.image_features`: with a Hugging Face text tower whose
transformer is locked, only the projection trains, so each string's pooled transformer output
is computed once (memoised, and cached on disk when a cache folder is given) and every step
runs the projection alone. Alignment and learning curves see thousands of titles and prompts
per epoch; this is what makes them take seconds rather than minutes on a CPU.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .store import EmbeddingStore, default_cache_dir
from .encoding import short_hash, tokenizer_id
from ..models import weights_fingerprint


class LiveTextFeatures:
    """Every call runs the whole text tower (with gradients where it trains)."""

    def __init__(self, model, tokenizer, device="cpu"):
        self.model = model
        self.tokenizer = tokenizer
        self.device = device

    def __call__(self, texts: list[str]) -> torch.Tensor:
        return self.model.encode_text(self.tokenizer(list(texts)).to(self.device))


class CachedTextFeatures:
    """Fast path: pooled outputs of the locked transformer, through the trainable projection."""

    def __init__(self, text_tower, tokenizer, device="cpu", cache_dir: str | os.PathLike | None = None,
                 batch_size: int = 256):
        self.text = text_tower
        self.tokenizer = tokenizer
        self.device = device
        self.batch_size = batch_size
        folder = None
        if cache_dir is not None:
            key = short_hash(weights_fingerprint(text_tower.transformer.state_dict()), tokenizer_id(tokenizer),
                             type(text_tower.pooler).__name__)
            folder = Path(cache_dir) / "text-trunk" / key
        self.store = EmbeddingStore(folder)

    @torch.no_grad()
    def _pool(self, texts: list[str]) -> np.ndarray:
        tokens = self.tokenizer(texts).to(self.device)
        mask = (tokens != self.text.config.pad_token_id).long()
        return self.text.pooler(self.text.transformer(input_ids=tokens, attention_mask=mask), mask).float().cpu().numpy()

    def __call__(self, texts: list[str]) -> torch.Tensor:
        texts = [str(t) for t in texts]
        todo = [t for t in dict.fromkeys(texts) if t not in self.store]
        if todo:
            was_training = self.text.transformer.training
            self.text.transformer.eval()  # a locked tower runs without dropout, as in training
            pooled = [self._pool(todo[i : i + self.batch_size]) for i in range(0, len(todo), self.batch_size)]
            self.text.transformer.train(was_training)
            self.store.add(todo, np.concatenate(pooled))
        pooled = torch.from_numpy(self.store.get(texts)).to(self.device)
        projected, words = self.text.proj(pooled), getattr(self.text, "words", None)  # clipft.title_words
        if words is None or words.inert():
            return projected
        return projected + words(self.tokenizer(texts).to(self.device))


def text_features(model, tokenizer, device="cpu", cache_dir=None):
    """The fast path when the model has a Hugging Face text tower with a locked transformer,
    the live path otherwise."""
    text = getattr(model, "text", None)
    locked = text is not None and hasattr(text, "transformer") and hasattr(text, "pooler") and not any(
        p.requires_grad for p in text.transformer.parameters())
    if locked:
        return CachedTextFeatures(text, tokenizer, device, cache_dir if cache_dir is not None else default_cache_dir())
    return LiveTextFeatures(model, tokenizer, device)
