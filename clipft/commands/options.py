"""Options shared by several commands, as click decorators: how to name a model, read a
catalogue, pick a labeller and precision, and where a training run goes."""
from __future__ import annotations

import functools
import os

import click

from ..precision import PRECISIONS


def default_workers() -> int:
    # Measured on 2 cores: the model needs both, so decoding in-process is fastest there
    # (benchmarks/throughput.py); larger machines leave two cores for the model.
    return min(8, max(0, (os.cpu_count() or 1) - 2))


def model_options(func):
    """--model/--pretrained/--device, shared by every command that loads a model."""
    options = [
        click.option(
            "--model", default="ViT-B-32", show_default=True,
            help="OpenCLIP architecture (see `clipft models`), or lite0-minilm: the offline model built "
            "from pip-installed EfficientNet-Lite0 and MiniLM towers. Its towers are not aligned until "
            "trained on image-text pairs, so its zero-shot scores start near chance.",
        ),
        click.option(
            "--pretrained", default=None,
            help="OpenCLIP pretrained tag (downloaded by OpenCLIP), a checkpoint file, or 'random'. "
            "Default: laion2b_s34b_b79k (or the architecture's first tag); lite0-minilm: its pretrained towers.",
        ),
        click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:1, ... ('auto': cuda if available)."),
    ]
    return functools.reduce(lambda f, opt: opt(f), reversed(options), func)


def catalogue_options(func):
    """How to read a catalogue CSV, shared by every command that reads one."""
    options = [
        click.option("--data", "data", required=True, type=click.Path(dir_okay=False), help="Catalogue CSV (e.g. styles.csv)."),
        click.option("--image-column", default=None, help="Column with image paths (default: image/path/..., else id -> images/<id>.jpg)."),
        click.option("--id-column", default=None, help="Column with product ids (default: id if present, else the CSV line)."),
        click.option("--image-dir", default=None, type=click.Path(file_okay=False), help="Folder for id-named images (default: images/ beside the CSV)."),
        click.option("--sep", default=None, help="CSV separator (default: the one the header uses; tab for .tsv)."),
        click.option("--limit", default=None, type=click.IntRange(min=1), help="Use a seeded random sample of this many rows."),
        click.option("--skip-bad", is_flag=True, help="Skip malformed lines and rows whose image is missing or unreadable "
                     "(listed in skipped.csv) instead of stopping."),
        click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1)),
        click.option("--workers", default=default_workers(), show_default=True, type=click.IntRange(min=0),
                     help="Image decoding processes (0: decode in the main process, fastest on 2 cores)."),
        click.option("--cache-dir", default=None, type=click.Path(file_okay=False), help="Embedding cache (default: $CLIPFT_CACHE or ~/.cache/clipft)."),
        click.option("--seed", default=0, show_default=True, type=int, help="Seed for sampling and random initialisation."),
    ]
    return functools.reduce(lambda f, opt: opt(f), reversed(options), func)


PRECISION_OPTION = click.option(
    "--precision", default=None, type=click.Choice(PRECISIONS),
    help="Encoding precision: fp32, amp / amp_bf16 (autocast), int8 (CPU: Linear layers quantised). "
    "Default: amp on a GPU, fp32 on a CPU. Cached per precision.")


def labeller_options(func):
    """A trained run and the catalogue it labels, shared by predict and audit."""
    options = [
        click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False),
                     help="A finished finetune or probe run folder (it holds labeller.json)."),
        catalogue_options,
        click.option("--title-column", default=None,
                     help="Column with product titles (default: the run's, when the CSV has it)."),
        click.option("--attributes", default=None, callback=lambda ctx, param, value: (
            [a.strip() for a in value.split(",") if a.strip()] if value else None),
            help="Comma-separated attributes (default: every attribute the run labels)."),
    ]
    return functools.reduce(lambda f, opt: opt(f), reversed(options), func)


def run_options(func):
    """--set overrides, --out and --quiet, shared by finetune, align, probe and curve."""
    options = [
        click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                     help="Override a config field, e.g. --set epochs=5 --set 'prompts=[color]'."),
        click.option("--out", required=True, type=click.Path(file_okay=False),
                     help="Run folder: config, splits, metrics per epoch, checkpoints, plots. An interrupted run resumes here."),
        click.option("--quiet", is_flag=True, help="No progress bars."),
    ]
    return functools.reduce(lambda f, opt: opt(f), reversed(options), func)
