"""``clipft zeroshot``: score a catalogue against prompt files, chunk by chunk, and write its
report (predictions.csv, metrics.json, confusion matrices, skipped.csv)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import pandas as pd
import torch
from tqdm.auto import tqdm

from ..catalogue import CatalogueSource, validate_catalogue
from ..distributed import init_distributed
from ..fileio import atomic_write, rank_output_folder, write_json
from ..fusion import resolve_inputs
from ..models import load_model, resolve_device
from ..precision import encoding_precision, resolve_precision
from ..prompts import load_prompt_specs, warn_missing_columns
from ..reporting.plots import plot_confusion_matrix
from ..reporting.results import LabelledResults, predictions_frame, skipped_frame
from ..zeroshot import ScoredCatalogue, zeroshot_catalogue


OUTPUTS = ("predictions.csv", "metrics.json", "skipped.csv", "mistakes.csv")


@dataclass
class ReportTotals:
    rows: int = 0  # catalogue rows read
    scored: int = 0
    skipped: int = 0
    encoded: int = 0  # images computed (the rest came from the cache)
    metrics: dict = field(default_factory=dict)
    inputs: str = "image"  # what the products were scored on


def write_zeroshot_report(chunks: Iterable[ScoredCatalogue], out_dir: str | Path, run_info: dict,
                          started: float | None = None) -> ReportTotals:
    """Write every result file into ``out_dir`` from scored chunks of a catalogue (one chunk
    for a catalogue that fits in memory). Predictions are written as each chunk arrives, into
    a file that replaces predictions.csv only when all chunks are done. ``started``
    (``time.perf_counter()`` at the start of the run) adds the run's seconds to metrics.json."""
    out = Path(out_dir)
    totals = ReportTotals()
    results = LabelledResults()
    skipped = []
    with atomic_write(out / "predictions.csv") as f:
        for scored in chunks:
            predictions = predictions_frame(scored)
            predictions.to_csv(f, index=False, header=totals.rows == 0)
            results.add(scored, predictions)
            if scored.skipped:
                skipped.append(skipped_frame(scored.catalogue, scored.skipped))
            totals.rows += len(scored.catalogue)
            totals.scored += len(scored.rows)
            totals.skipped += len(scored.skipped)
            totals.encoded += scored.encoded
    if totals.skipped:
        with atomic_write(out / "skipped.csv") as f:
            pd.concat(skipped, ignore_index=True).to_csv(f, index=False)
    totals.metrics = results.metrics()
    if totals.metrics:
        results.mistakes.write(out / "mistakes.csv")
        seconds = {"seconds": round(time.perf_counter() - started, 2)} if started is not None else {}
        write_json(out / "metrics.json", {"run": run_info | seconds, "attributes": totals.metrics})
        for attribute in totals.metrics:
            y_true, y_pred = results.pairs(attribute)
            if len(y_true):
                plot_confusion_matrix(y_true, y_pred, attribute, out / f"confusion_{attribute}.png")
    return totals


def run_zeroshot(source: CatalogueSource, prompt_files, out: str | Path, model: str, pretrained: str | None,
                 device: str = "auto", inputs: str | None = None, title_weight: float = 0.5, skip_bad: bool = False,
                 batch_size: int = 64, workers: int = 0, cache_dir=None,
                 precision: str | None = None) -> tuple[ReportTotals, list] | None:
    """Score every chunk and write the report; under torchrun every rank takes part in encoding
    each chunk and rank 0 alone scores and writes (the others return None). Photos, titles and
    prompts are encoded at ``precision`` (:mod:`clipft.precision`; default fp32 on CPU, amp on GPU)."""
    start = time.perf_counter()
    specs = load_prompt_specs(prompt_files)
    world, device = init_distributed(resolve_device(device))
    with rank_output_folder(world.main, out, OUTPUTS, previous=("confusion_*.png",)) as stage:
        summary = validate_catalogue(source.chunks(), skip_bad)  # a first pass: missing photos stop the run here
        warn_missing_columns(specs, source.header(), source.data)
        inputs = resolve_inputs(inputs, summary)
        precision = resolve_precision(precision, device)
        torch.manual_seed(source.seed)
        clip, preprocess, tokenizer = load_model(model, pretrained, device)
        one_chunk = summary.rows <= source.chunk_size
        scored = (zeroshot_catalogue(clip, preprocess, tokenizer, chunk, specs if world.main else [], skip_bad,
                                     cache_dir, device, batch_size=batch_size, workers=workers, inputs=inputs,
                                     title_weight=title_weight, progress=one_chunk)
                  for chunk in tqdm(source.chunks(), total=-(-summary.rows // source.chunk_size), unit="chunk",
                                    desc=f"Scoring {source.chunk_size}-row chunks", disable=one_chunk or not world.main))
        info = {"command": "zeroshot", "model": model, "pretrained": pretrained, "data": str(source.data),
                "inputs": inputs, "title_column": summary.title_column,
                "title_weight": title_weight if inputs == "fusion" else None, "prompts": list(prompt_files),
                "seed": source.seed, "limit": source.limit, "precision": precision}
        with encoding_precision(precision):
            if not world.main:
                for _ in scored:
                    pass
                return None
            totals = write_zeroshot_report(scored, stage, info, started=start)
    totals.inputs = inputs
    return totals, specs
