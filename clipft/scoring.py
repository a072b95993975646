"""Zero-shot scoring of a whole catalogue: one pass over the images serves every attribute."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .data import BadImage, Catalogue
from .embeddings import encode_catalogue, encode_texts
from .fusion import ProductFeatures
from .prompts import PromptSpec
from .zeroshot import ZeroShotClassifier


@dataclass
class ScoredCatalogue:
    catalogue: Catalogue
    specs: list[PromptSpec]
    rows: np.ndarray  # catalogue rows that were scored
    skipped: list[BadImage]  # rows whose image was missing or unreadable
    proba: dict[str, np.ndarray]  # attribute -> (len(rows), n_classes)
    encoded: int  # images computed in this run (the rest came from the cache)
    scored_on: np.ndarray  # per scored row: image, title, image+title or nothing (text-only, no title)


def zeroshot_catalogue(
    model,
    preprocess,
    tokenizer,
    catalogue: Catalogue,
    specs: list[PromptSpec],
    skip_bad: bool = False,
    cache_dir=None,
    device="cpu",
    batch_size: int = 64,
    workers: int = 0,
    progress: bool = True,
    inputs: str = "image",
    title_weight: float = 0.5,
) -> ScoredCatalogue:
    """Encode the catalogue's images once (see :func:`encode_catalogue` for bad photos) and/or
    its titles, then score them against every prompt file.

    ``inputs`` (see :mod:`clipft.fusion`): ``image``, ``text`` (titles only: photos are not
    read) or ``fusion`` (``title_weight`` on the title; rows without a title use the photo).
    """
    image = np.zeros((len(catalogue), 0), dtype=np.float32)
    rows, skipped, encoded = np.arange(len(catalogue)), [], 0
    if inputs != "text":
        encoding = encode_catalogue(model, preprocess, catalogue, skip_bad, cache_dir, device, batch_size, workers, progress)
        rows, skipped, encoded = encoding.rows, encoding.skipped, encoding.encoded
        image = np.full((len(catalogue), encoding.embeddings.shape[1]), np.nan, dtype=np.float32)
        image[rows] = encoding.embeddings

    def text_fn(texts):
        return torch.from_numpy(encode_texts(model, tokenizer, texts, cache_dir, device))

    titles = np.array(catalogue.titles(), dtype=object)
    features = ProductFeatures(lambda r: torch.from_numpy(image[r]), text_fn, titles, inputs, title_weight)
    X = features(rows).numpy() if len(rows) else np.zeros((0, 1), dtype=np.float32)
    has_title = np.array([t is not None for t in titles[rows]], dtype=bool)
    scored_on = {"image": np.full(len(rows), "image"),
                 "text": np.where(has_title, "title", "nothing"),
                 "fusion": np.where(has_title, "image+title", "image")}[inputs]

    proba = {}
    for spec in specs:
        clf = ZeroShotClassifier(model, tokenizer, spec, cache_dir, device).fit()
        proba[spec.attribute] = clf.predict_proba(X) if len(rows) else np.zeros((0, len(spec.classes)))
    return ScoredCatalogue(catalogue, specs, rows, skipped, proba, encoded, scored_on.astype(object))
