"""Zero-shot scoring of a whole catalogue: one pass over the images serves every attribute."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .data import BadImage, Catalogue, CatalogueError, bad_images_message, check_images
from .embeddings import encode_images
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
    """Encode the catalogue's images once, then score them against every prompt file.

    Missing files stop the run before any work; photos that fail to decode stop it after the
    pass (the good embeddings are cached by then), unless ``skip_bad`` is set.
    """
    check_images(catalogue, skip_bad)
    missing_rows = {b.row for b in catalogue.missing}
    candidates = [r for r in range(len(catalogue)) if r not in missing_rows]
    encoding = encode_images(
        model, preprocess, [catalogue.image_paths[r] for r in candidates], cache_dir, device,
        batch_size=batch_size, workers=workers, progress=progress,
    )
    undecodable = [
        BadImage(row, catalogue.lines[row], str(catalogue.image_paths[row]), reason)
        for row, reason in ((candidates[i], reason) for i, reason in sorted(encoding.failed.items()))
    ]
    if undecodable and not skip_bad:
        raise CatalogueError(bad_images_message(catalogue.source, undecodable))
    rows = np.array([r for i, r in enumerate(candidates) if i not in encoding.failed], dtype=int)
    features = encoding.embeddings[encoding.ok]
    proba = {}
    for spec in specs:
        clf = ZeroShotClassifier(model, tokenizer, spec, cache_dir, device).fit()
        proba[spec.attribute] = clf.predict_proba(features) if len(rows) else np.zeros((0, len(spec.classes)))
    skipped = sorted(catalogue.missing + undecodable, key=lambda b: b.row)
    return ScoredCatalogue(catalogue, specs, rows, skipped, proba, encoding.encoded)
