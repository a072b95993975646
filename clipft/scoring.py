"""Zero-shot scoring of a whole catalogue: one pass over the images serves every attribute."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .data import BadImage, Catalogue
from .embeddings import encode_catalogue
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
) -> ScoredCatalogue:
    """Encode the catalogue's images once (see :func:`encode_catalogue` for bad photos), then
    score them against every prompt file."""
    encoding = encode_catalogue(model, preprocess, catalogue, skip_bad, cache_dir, device, batch_size, workers, progress)
    rows, features = encoding.rows, encoding.embeddings
    proba = {}
    for spec in specs:
        clf = ZeroShotClassifier(model, tokenizer, spec, cache_dir, device).fit()
        proba[spec.attribute] = clf.predict_proba(features) if len(rows) else np.zeros((0, len(spec.classes)))
    return ScoredCatalogue(catalogue, specs, rows, encoding.skipped, proba, encoding.encoded)
