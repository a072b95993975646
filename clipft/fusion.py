"""Products as the classifier sees them: the photo, the title, or both fused.

Fusion is late and linear: ``(1 - w) * image + w * title`` of the unit image embedding and the
unit title embedding. Classifiers normalise it again, so the predicted class is the one with
the highest weighted sum of the image's and the title's logits. A product without a title
(missing, empty, or dropped in training) falls back to its image alone; text-only scoring of a
product without a title has nothing to go on, so its embedding is zero (uniform scores).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .catalogue import Catalogue, CatalogueError
from .defaults import TITLE_WEIGHT

INPUTS = ("image", "text", "fusion")
WEIGHT_GRID = tuple(np.round(np.linspace(0, 1, 11), 2).tolist())  # title weights tried on validation


@dataclass
class ProductParts:
    image: torch.Tensor | None  # (n, d) unit vectors; None for text-only
    title: torch.Tensor | None  # (n, d) unit vectors, zero where has_title is False; None for image-only
    has_title: torch.Tensor  # (n,) bool


def combine(parts: ProductParts, inputs: str, weight: float) -> torch.Tensor:
    """One embedding per product from its parts (see the module docstring)."""
    if inputs == "image":
        return parts.image
    if inputs == "text":
        return parts.title
    w = torch.where(parts.has_title, torch.tensor(float(weight)), torch.tensor(0.0)).to(parts.image)[:, None]
    return torch.lerp(parts.image, parts.title, w)  # (1 - w) * image + w * title, in one pass


def resolve_inputs(requested: str | None, catalogue: Catalogue) -> str:
    """``requested``, or by default fusion when the catalogue has a title column; text and
    fusion need one."""
    inputs = requested or ("fusion" if catalogue.title_column else "image")
    if inputs not in INPUTS:
        raise ValueError(f"inputs must be one of {', '.join(INPUTS)}, got {inputs!r}")
    if inputs != "image" and catalogue.title_column is None:
        raise CatalogueError(f"{catalogue.source}: scoring on {inputs} needs titles: name the title column "
                             f"(--title-column, or title_column in a config)")
    return inputs


def scored_on(titles: np.ndarray, inputs: str) -> np.ndarray:
    """Per product, what it is scored on: image, title, image+title, or nothing (text-only, no title)."""
    has_title = np.array([t is not None for t in titles], dtype=bool)
    return {"image": np.full(len(titles), "image"),
            "text": np.where(has_title, "title", "nothing"),
            "fusion": np.where(has_title, "image+title", "image")}[inputs].astype(object)


def title_dropout_mask(n: int, p: float, rng: np.random.Generator) -> np.ndarray:
    """Which of ``n`` training examples lose their title this step (each with probability ``p``)."""
    return rng.random(n) < p if p > 0 else np.zeros(n, dtype=bool)


@dataclass
class ProductFeatures:
    """``features(rows)``: embeddings of catalogue rows from their photos and/or titles.

    ``image_fn(rows)`` and ``text_fn(strings)`` are the image and text sides
    (:mod:`clipft.cache.image_features`, :mod:`clipft.cache.text_features`); ``titles`` holds each
    catalogue row's title or None.
    """

    image_fn: Callable | None
    text_fn: Callable | None
    titles: np.ndarray
    inputs: str = "image"
    weight: float = TITLE_WEIGHT

    def __post_init__(self) -> None:
        if self.inputs not in INPUTS:
            raise ValueError(f"inputs must be one of {', '.join(INPUTS)}, got {self.inputs!r}")
        self.titles = np.asarray(self.titles, dtype=object)

    def without_titles(self) -> "ProductFeatures":
        """The same model scoring products whose titles were all removed."""
        return replace(self, titles=np.full(len(self.titles), None, dtype=object))

    def parts(self, rows, drop: np.ndarray | None = None) -> ProductParts:
        rows = np.asarray(rows, dtype=int)
        has = np.array([t is not None for t in self.titles[rows]], dtype=bool)
        if drop is not None:
            has &= ~drop
        image = F.normalize(self.image_fn(rows), dim=-1) if self.inputs != "text" else None
        title = None
        if self.inputs != "image":
            present = self.text_fn(list(self.titles[rows[has]])) if has.any() else self.text_fn([""])[:0]
            title = present.new_zeros((len(rows), present.shape[1]))
            title[torch.from_numpy(has)] = F.normalize(present, dim=-1)
        return ProductParts(image, title, torch.from_numpy(has))

    def __call__(self, rows, drop: np.ndarray | None = None) -> torch.Tensor:
        return combine(self.parts(rows, drop), self.inputs, self.weight)


def batched_parts(features: ProductFeatures, rows: np.ndarray, batch_size: int) -> ProductParts:
    """``features.parts(rows)`` computed ``batch_size`` rows at a time, on the CPU in float32."""
    chunks = [features.parts(rows[i : i + batch_size]) for i in range(0, len(rows), batch_size)]

    def cat(name):
        values = [getattr(c, name) for c in chunks]
        return None if values[0] is None else torch.cat(values).cpu()

    image, title = cat("image"), cat("title")
    return ProductParts(None if image is None else image.float(), None if title is None else title.float(),
                        cat("has_title"))
