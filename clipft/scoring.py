"""Labelling a catalogue with a labeller (:mod:`clipft.labeller`), chunk by chunk: the one
loop that ``zeroshot``, ``predict`` and a trained run's test split go through. Each chunk's
photos are encoded (through the cache) and its products scored; the chunks go on to one writer
(:func:`clipft.reporting.scoring_outputs.write_scoring_outputs`)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
from tqdm.auto import tqdm

from .applicability import applies
from .catalogue import BadImage, Catalogue
from .defaults import BATCH_SIZE, CHUNK_SIZE, DEVICE
from .fusion import ProductFeatures, scored_on


@dataclass(frozen=True)
class EncodeOptions:
    """How a scoring command reads and encodes photos (``--skip-bad``, ``--batch-size``,
    ``--workers``, ``--cache-dir``, ``--device``, ``--precision``)."""

    skip_bad: bool = False
    batch_size: int = BATCH_SIZE
    workers: int = 0
    cache_dir: str | None = None
    device: str = DEVICE
    precision: str | None = None  # fp32 | amp | amp_bf16 | int8 (default: amp on a GPU, fp32 on a CPU)


@dataclass
class ScoredChunk:
    catalogue: Catalogue
    rows: np.ndarray  # rows of ``catalogue`` that were scored
    skipped: list[BadImage]  # rows whose photo was missing or unreadable
    proba: dict[str, np.ndarray]  # attribute -> (len(rows), n_classes), calibrated
    encoded: int  # photos computed in this chunk (the rest came from the cache)
    scored_on: np.ndarray  # per scored row: image, title, image+title, or nothing (text-only, no title)
    applies: dict[str, np.ndarray]  # attribute -> per scored row, whether it applies (clipft.applicability)
    features: ProductFeatures | None = None  # the chunk's product features (photos from the cache), for reuse

    def take(self, positions) -> "ScoredChunk":
        """The chunk cut down to the scored rows at ``positions`` (in that order)."""
        positions = np.asarray(positions, dtype=int)
        return dataclasses.replace(self, rows=self.rows[positions], proba={a: p[positions] for a, p in self.proba.items()},
                                   scored_on=self.scored_on[positions],
                                   applies={a: m[positions] for a, m in self.applies.items()})


def score_chunk(labeller, chunk: Catalogue, options: EncodeOptions, main: bool = True,
                progress: bool = True) -> ScoredChunk:
    """One chunk encoded and scored. Under torchrun every rank encodes its share of the photos
    (``main`` False: nothing is scored there, ``proba`` stays empty)."""
    features, rows, bad, encoded = labeller.catalogue_features(chunk, options.skip_bad, options.batch_size,
                                                               options.workers, progress)
    proba, applying = {}, {}
    if main:
        proba = (labeller.proba_from_logits(labeller.logits(features, rows)) if len(rows) else
                 {a: np.zeros((0, len(h.classes))) for a, h in labeller.heads.items()})
        predicted = {a: labeller.heads[a].classes[p.argmax(axis=1)] if len(p) else np.zeros(0, dtype=object)
                     for a, p in proba.items()}
        applying = applies([h.spec for h in labeller.heads.values()], chunk.frame, rows, predicted)
    return ScoredChunk(chunk, rows, bad, proba, encoded, scored_on(features.titles[rows], labeller.inputs), applying,
                       features)


def score_chunks(labeller, chunks: Iterable[Catalogue], options: EncodeOptions, rows: int | None = None,
                 chunk_size: int = CHUNK_SIZE, main: bool = True, progress: bool = True) -> Iterator[ScoredChunk]:
    """Every chunk scored in turn. ``rows`` (the catalogue's length, when known) sizes the
    progress bar: one bar over chunks, or the encoding bar when everything fits in one chunk."""
    one_chunk = rows is not None and rows <= chunk_size
    total = -(-rows // chunk_size) if rows is not None else None
    bar = tqdm(chunks, total=total, unit="chunk", desc=f"Scoring {chunk_size}-row chunks",
               disable=one_chunk or not progress or not main)
    for chunk in bar:
        yield score_chunk(labeller, chunk, options, main, progress and one_chunk)


def catalogue_rows(catalogue: Catalogue, rows) -> Catalogue:
    """The products at ``rows`` of ``catalogue`` as a catalogue of their own (a run's test split)."""
    rows = np.asarray(rows, dtype=int)
    position = {int(r): i for i, r in enumerate(rows)}
    names = catalogue.image_names
    return dataclasses.replace(
        catalogue, frame=catalogue.frame.iloc[rows].reset_index(drop=True),
        image_paths=[catalogue.image_paths[r] for r in rows], ids=[catalogue.ids[r] for r in rows],
        lines=[catalogue.lines[r] for r in rows], image_names=None if names is None else [names[r] for r in rows],
        missing=[dataclasses.replace(b, row=position[b.row]) for b in catalogue.missing if b.row in position])
