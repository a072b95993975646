"""``clipft zeroshot``: label a catalogue with a zero-shot labeller built from prompt files
(:meth:`clipft.labeller.Labeller.zero_shot`), chunk by chunk, through the writer that
``predict`` uses (predictions.csv, metrics.json, confusion matrices, mistakes.csv, skipped.csv)."""
from __future__ import annotations

import time
from pathlib import Path

import torch

from ..applicability import check_dependencies
from ..catalogue import CatalogueSource, validate_catalogue
from ..distributed import init_distributed
from ..fileio import rank_output_folder
from ..defaults import TITLE_WEIGHT
from ..fusion import resolve_inputs
from ..labeller import Labeller
from ..models import load_model, resolve_device
from ..precision import resolve_precision
from ..prompts import load_prompt_specs, warn_missing_columns
from ..reporting.scoring_outputs import OUTPUTS, PREVIOUS, ScoringTotals, label_catalogue
from ..scoring import EncodeOptions


def run_zeroshot(source: CatalogueSource, prompt_files, out: str | Path, model: str, pretrained: str | None,
                 options: EncodeOptions = EncodeOptions(), inputs: str | None = None,
                 title_weight: float = TITLE_WEIGHT) -> tuple[ScoringTotals, Labeller] | None:
    """Score every chunk and write the outputs; under torchrun every rank takes part in encoding
    each chunk and rank 0 alone scores and writes (the others return None). Photos, titles and
    prompts are encoded at ``options.precision`` (:mod:`clipft.precision`)."""
    started = time.perf_counter()
    specs = load_prompt_specs(prompt_files)
    world, device = init_distributed(resolve_device(options.device))
    with rank_output_folder(world.main, out, OUTPUTS, previous=PREVIOUS) as stage:
        summary = validate_catalogue(source.chunks(), options.skip_bad)  # missing photos stop the run here
        warn_missing_columns(specs, source.header(), source.data)
        check_dependencies(specs, source.header(), source.data)
        inputs = resolve_inputs(inputs, summary)
        precision = resolve_precision(options.precision, device)
        torch.manual_seed(source.seed)
        clip, preprocess, tokenizer = load_model(model, pretrained, device)
        info = {"command": "zeroshot", "model": model, "pretrained": pretrained, "data": str(source.data),
                "inputs": inputs, "title_column": summary.title_column,
                "title_weight": title_weight if inputs == "fusion" else None, "prompts": list(prompt_files),
                "seed": source.seed, "limit": source.limit, "precision": precision}
        # prompts first: a prompt file refused for its length stops the run before the photo pass
        labeller = Labeller.zero_shot(clip, preprocess, tokenizer, specs, inputs, title_weight, device,
                                      options.cache_dir, info)
        totals = label_catalogue(labeller, source, summary.rows, options, precision, world.main, stage, info,
                                 started=started)
    return None if totals is None else (totals, labeller)
