"""The one writer of a labelling run (``zeroshot``, ``predict``, a trained run's test split):
predictions.csv streamed chunk by chunk, then metrics.json, confusion matrices,
risk_coverage.png and mistakes.csv where the catalogue has labels, skipped.csv where photos
were skipped, and, for a calibrated labeller, the review queue and its Label Studio files."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import pandas as pd

from ..fileio import atomic_write, output_folder, write_json
from ..precision import encoding_precision
from ..scoring import EncodeOptions, ScoredChunk, catalogue_rows, score_chunk, score_chunks
from .plots import plot_confusion_matrix, plot_risk_coverage
from .results import LabelledResults, predictions_frame, skipped_frame
from .review import TaskPhotos, review_frame, write_review_outputs

OUTPUTS = ("predictions.csv", "metrics.json", "skipped.csv", "mistakes.csv", "risk_coverage.png", "review.csv",
           "review_labelstudio.json", "labelstudio_config.xml")
PREVIOUS = ("confusion_*.png",)  # per attribute: an older run's plots of other attributes are removed
TEST_FOLDER = "test"  # a trained run's test split, labelled by the run's own labeller


@dataclass
class ScoringTotals:
    rows: int = 0  # catalogue rows read
    scored: int = 0
    skipped: int = 0
    encoded: int = 0  # photos computed (the rest came from the cache)
    review: int = 0  # (product, attribute) pairs sent to review
    metrics: dict = field(default_factory=dict)
    inputs: str = "image"  # what the products were scored on


def _write_frames(path: Path, frames: list[pd.DataFrame]) -> None:
    with atomic_write(path) as f:
        pd.concat(frames, ignore_index=True).to_csv(f, index=False)


def _write_predictions(chunks: Iterable[ScoredChunk], out: Path, labeller, results: LabelledResults,
                       totals: ScoringTotals) -> tuple[list, list]:
    """predictions.csv as each chunk arrives (it replaces the old one only when every chunk is
    done); returns the review queue's parts and the skipped rows."""
    review, skipped = [], []
    with atomic_write(out / "predictions.csv") as f:
        for n, chunk in enumerate(chunks):
            predictions = predictions_frame(chunk, labeller.heads)
            predictions.to_csv(f, index=False, header=n == 0)
            results.add(chunk, predictions)
            if labeller.calibrated:
                review.append(review_frame(chunk.catalogue, chunk.rows, predictions, labeller.heads))
            if chunk.skipped:
                skipped.append(skipped_frame(chunk.catalogue, chunk.skipped))
            totals.rows, totals.scored = totals.rows + len(chunk.catalogue), totals.scored + len(chunk.rows)
            totals.skipped, totals.encoded = totals.skipped + len(chunk.skipped), totals.encoded + chunk.encoded
    return review, skipped


def _write_label_plots(out: Path, results: LabelledResults) -> None:
    curves = {}
    for name in results.entries:
        arrays = results.arrays(name)
        if len(arrays["y"]) and not results.heads[name].spec.multi:  # a multi-valued one has F1 per class instead
            plot_confusion_matrix(arrays["y"], arrays["pred"], name, out / f"confusion_{name}.png")
            curves[name] = (arrays["conf"], arrays["y"] == arrays["pred"], arrays["auto"])
    if curves:
        plot_risk_coverage(curves, out / "risk_coverage.png")


def write_scoring_outputs(chunks: Iterable[ScoredChunk], out: str | Path, labeller, info: dict,
                          photos: TaskPhotos | str = "", started: float | None = None) -> ScoringTotals:
    """Write every output of ``labeller``'s scored ``chunks`` into ``out``. ``info`` is
    metrics.json's ``run`` object; ``started`` (``time.perf_counter()`` at the start) adds the
    run's seconds to it."""
    out = Path(out)
    totals, results = ScoringTotals(inputs=labeller.inputs), LabelledResults(labeller.heads, labeller.calibrated)
    review, skipped = _write_predictions(chunks, out, labeller, results, totals)
    if skipped:
        _write_frames(out / "skipped.csv", skipped)
    if labeller.calibrated:
        queue = pd.concat(review, ignore_index=True) if review else pd.DataFrame()
        write_review_outputs(out, queue, labeller.heads, info.get("labeller", info.get("model", "clipft")),
                             photos)
        totals.review = len(queue)
    totals.metrics = results.metrics()
    seconds = {"seconds": round(time.perf_counter() - started, 2)} if started is not None else {}
    calibration = {a: h.calibration.to_dict() for a, h in labeller.heads.items()} if labeller.calibrated else {}
    write_json(out / "metrics.json", {"run": info | seconds, "calibration": calibration, "attributes": totals.metrics})
    if results.entries:
        results.mistakes.write(out / "mistakes.csv")
        _write_label_plots(out, results)
    return totals


def label_catalogue(labeller, source, rows: int, options: EncodeOptions, precision: str, main: bool, out: Path,
                    info: dict, photos: TaskPhotos | str = "", started: float | None = None,
                    progress: bool = True) -> ScoringTotals | None:
    """Score ``source`` (a :class:`clipft.catalogue.CatalogueSource` of ``rows`` rows) chunk by
    chunk at ``precision`` and write the outputs into ``out``. Under torchrun every rank encodes
    its share of each chunk and rank 0 (``main``) alone scores and writes; the others return None."""
    with encoding_precision(precision):
        chunks = score_chunks(labeller, source.chunks(), options, rows, source.chunk_size, main, progress)
        if not main:
            for _ in chunks:
                pass
            return None
        return write_scoring_outputs(chunks, out, labeller, info, photos, started)


def write_test_split(labeller, catalogue, rows, run_dir: Path, options: EncodeOptions, info: dict) -> ScoringTotals:
    """A trained run's test split (``rows`` of ``catalogue``) labelled by the run's labeller, as
    ``predict`` would: predictions, metrics, confusion matrices and mistakes in ``run_dir/test``,
    which ``clipft report`` shows beside the run's comparison."""
    with output_folder(Path(run_dir) / TEST_FOLDER, OUTPUTS, previous=PREVIOUS) as stage:
        chunk = score_chunk(labeller, catalogue_rows(catalogue, rows), options, progress=False)
        return write_scoring_outputs([chunk], stage, labeller, {"command": "predict", "split": "test", **info})
