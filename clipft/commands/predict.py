"""``clipft predict``: label a catalogue with a finished run (:mod:`clipft.labeller`), chunk by
chunk, and say which labels can be trusted (auto) and which a person should check (review)."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from ..catalogue import CatalogueError, CatalogueSource, validate_catalogue
from ..distributed import init_distributed
from ..fileio import atomic_write, rank_output_folder, write_json
from ..fusion import scored_on
from ..labeller import Labeller, LabellerError
from ..models import resolve_device
from ..precision import encoding_precision, resolve_precision
from ..prompts import warn_missing_columns
from ..reporting.results import skipped_frame
from ..reporting.review import ReviewResults, predicted_frame, review_frame, write_review_outputs

log = logging.getLogger(__name__)

OUTPUTS = ("predictions.csv", "review.csv", "review_labelstudio.json", "labelstudio_config.xml",
           "metrics.json", "skipped.csv", "risk_coverage.png", "mistakes.csv")


@dataclass
class PredictTotals:
    rows: int = 0
    scored: int = 0
    skipped: int = 0
    encoded: int = 0
    review: int = 0  # (product, attribute) pairs sent to review
    metrics: dict | None = None


def load_labeller(run: str | Path, device: str, cache_dir, attributes=None, target_precision=None) -> Labeller:
    """The run's labeller, limited to ``attributes`` and re-thresholded at ``target_precision``."""
    labeller = Labeller.load(run, resolve_device(device), cache_dir)
    if attributes:
        unknown = [a for a in attributes if a not in labeller.heads]
        if unknown:
            raise LabellerError(f"--attributes: {', '.join(unknown)} not labelled by {run} "
                                f"(it labels {', '.join(labeller.attributes)})")
        labeller.heads = {a: labeller.heads[a] for a in attributes}
    if target_precision is not None:
        labeller.with_target_precision(target_precision)
    return labeller


def title_column_for(source: CatalogueSource, labeller: Labeller) -> str | None:
    """The catalogue's title column: as given, else the one the run was trained with when the
    file has it. A run trained on titles whose catalogue has none says so: it still labels, but
    on photos alone, and less accurately than its metrics promise."""
    if source.title_column is not None or labeller.inputs == "image":
        return source.title_column
    header = source.header()
    if labeller.title_column in header:
        return labeller.title_column
    if labeller.inputs == "text":
        raise CatalogueError(f"{source.data}: no title column '{labeller.title_column}', and the run labels titles "
                             f"only; pass --title-column with the column that holds them")
    log.warning("%s: no title column '%s', which the run was trained with: every product is labelled on its photo "
                "alone, less accurately than the run's metrics say (pass --title-column if the titles are under "
                "another name)", source.data, labeller.title_column)
    return None


def _predict_chunks(labeller: Labeller, source: CatalogueSource, out: Path, skip_bad: bool, batch_size: int,
                    workers: int, main: bool, progress: bool):
    """Write predictions.csv chunk by chunk; returns the totals, review queue parts, labelled results and skipped rows."""
    totals, results, review, skipped = PredictTotals(), ReviewResults(labeller.heads), [], []
    with atomic_write(out / "predictions.csv") as f:
        for chunk in tqdm(source.chunks(), unit="chunk", desc="Labelling chunks", disable=not progress or not main):
            features, rows, bad, encoded = labeller.catalogue_features(chunk, skip_bad, batch_size, workers, progress)
            totals.rows, totals.encoded = totals.rows + len(chunk), totals.encoded + encoded
            if not main or not len(rows):
                continue
            predicted = predicted_frame(chunk, rows, labeller.proba_from_logits(labeller.logits(features, rows)),
                                        labeller.heads)
            predicted.insert(1, "scored_on", scored_on(features.titles[rows], labeller.inputs))
            predicted.to_csv(f, index=False, header=totals.scored == 0)
            totals.scored += len(rows)
            results.add(chunk, rows, predicted)
            review.append(review_frame(chunk, rows, predicted, labeller.heads))
            if bad:
                skipped.append(skipped_frame(chunk, bad))
    return totals, results, review, skipped


def run_predict(run: str | Path, source: CatalogueSource, out: str | Path, attributes=None,
                target_precision: float | None = None, skip_bad: bool = False, batch_size: int = 64, workers: int = 0,
                cache_dir=None, device: str = "auto", image_url_prefix: str = "", progress: bool = True,
                precision: str | None = None) -> PredictTotals | None:
    """Label every product of ``source`` with the run's labeller; rank 0 writes (others return None).
    Every output appears in ``out`` together, when the run succeeds."""
    started = time.perf_counter()
    world, device = init_distributed(resolve_device(device))
    labeller = load_labeller(run, device, cache_dir, attributes, target_precision)
    with rank_output_folder(world.main, out, OUTPUTS) as stage:
        source.title_column = title_column_for(source, labeller)
        summary = validate_catalogue(source.chunks(), skip_bad)  # missing photos stop the run here, before any work
        warn_missing_columns([head.spec for head in labeller.heads.values()], source.header(), source.data)
        if summary.rows == 0:
            raise CatalogueError(f"{source.data}: catalogue has no rows")
        with encoding_precision(resolve_precision(precision, device)):
            totals, results, review, skipped = _predict_chunks(labeller, source, stage, skip_bad, batch_size, workers,
                                                               world.main, progress)
        if not world.main:
            return None
        info = {"command": "predict", "labeller": str(run), "data": str(source.data),
                "title_column": source.title_column, "seconds": round(time.perf_counter() - started, 2)}
        return _write_outputs(stage, labeller, totals, results, review, skipped, info, image_url_prefix)


def _write_outputs(out: Path, labeller: Labeller, totals: PredictTotals, results: ReviewResults, review, skipped,
                   info: dict, image_url_prefix: str) -> PredictTotals:
    queue = pd.concat(review, ignore_index=True) if review else pd.DataFrame()
    write_review_outputs(out, queue, labeller.heads, info["labeller"], image_url_prefix)
    totals.review, totals.skipped = len(queue), sum(len(s) for s in skipped)
    if skipped:
        with atomic_write(out / "skipped.csv") as f:
            pd.concat(skipped, ignore_index=True).to_csv(f, index=False)
    totals.metrics = results.metrics()
    calibration = {a: h.calibration.to_dict() for a, h in labeller.heads.items()}
    write_json(out / "metrics.json", {"run": info, "calibration": calibration, "attributes": totals.metrics})
    if totals.metrics:
        results.plot(out / "risk_coverage.png")
        results.mistakes.write(out / "mistakes.csv")
    return totals
