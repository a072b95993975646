"""Options shared by several commands, as click decorators: how to name a model, read a
catalogue and encode its photos, pick a labeller, and where a training run goes. Each default
is defined once (:mod:`clipft.defaults`)."""
from __future__ import annotations

import functools
import os

import click

from ..defaults import BATCH_SIZE, CHUNK_SIZE, DEVICE
from ..precision import PRECISIONS


def default_workers() -> int:
    # Measured on 2 cores: the model needs both, so decoding in-process is fastest there
    # (benchmarks/throughput.py); larger machines leave two cores for the model.
    return min(8, max(0, (os.cpu_count() or 1) - 2))


def _apply(options, func):
    return functools.reduce(lambda f, opt: opt(f), reversed(options), func)


DEVICE_OPTION = click.option("--device", default=DEVICE, show_default=True,
                             help="cpu, cuda, cuda:1, ... ('auto': cuda if available).")
CACHE_OPTION = click.option("--cache-dir", default=None, type=click.Path(file_okay=False),
                            help="Embedding cache (default: $CLIPFT_CACHE or ~/.cache/clipft).")
PRECISION_OPTION = click.option(
    "--precision", default=None, type=click.Choice(PRECISIONS),
    help="Encoding precision: fp32, amp / amp_bf16 (autocast), int8 (CPU: Linear layers quantised). "
    "Default: amp on a GPU, fp32 on a CPU. Cached per precision.")


def model_options(func):
    """--model/--pretrained, shared by every command that builds a model from a name."""
    return _apply([
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
    ], func)


_SOURCE_KEYS = ("data", "image_column", "id_column", "title_column", "image_dir", "sep", "limit", "seed")
_ENCODE_KEYS = ("skip_bad", "batch_size", "workers", "cache_dir", "device", "precision")


def _reading_options(title_help: str, chunked: bool) -> list:
    options = [
        click.option("--data", "data", required=True, type=click.Path(dir_okay=False), help="Catalogue CSV (e.g. styles.csv)."),
        click.option("--image-column", default=None,
                     help="Column with image paths or URLs (default: image/path/..., else id -> images/<id>.jpg)."),
        click.option("--id-column", default=None, help="Column with product ids (default: id if present, else the CSV line)."),
        click.option("--title-column", default=None, help=title_help),
        click.option("--image-dir", default=None, type=click.Path(file_okay=False),
                     help="Folder for id-named images (default: images/ beside the CSV)."),
        click.option("--sep", default=None, help="CSV separator (default: the one the header uses; tab for .tsv)."),
        click.option("--limit", default=None, type=click.IntRange(min=1), help="Use a seeded random sample of this many rows."),
        click.option("--seed", default=0, show_default=True, type=int, help="Seed for sampling and random initialisation."),
        click.option("--skip-bad", is_flag=True, help="Skip malformed lines and rows whose image is missing or unreadable "
                     "(listed in skipped.csv) instead of stopping."),
        click.option("--batch-size", default=BATCH_SIZE, show_default=True, type=click.IntRange(min=1),
                     help="Photos per encoding batch."),
        click.option("--workers", default=default_workers(), show_default=True, type=click.IntRange(min=0),
                     help="Image decoding processes (0: decode in the main process, fastest on 2 cores)."),
        CACHE_OPTION, DEVICE_OPTION, PRECISION_OPTION,
    ]
    if chunked:
        options.append(click.option("--chunk-size", default=CHUNK_SIZE, show_default=True, type=click.IntRange(min=1),
                                    help="Rows read, labelled and written at a time: memory stays flat for catalogues "
                                    "of any length."))
    return options


def catalogue_options(title_help: str, chunked: bool = True):
    """How to read a catalogue and encode its photos, shared by every command that labels one.
    The command receives them as two objects: ``source`` (a :class:`clipft.catalogue.CatalogueSource`)
    and ``encode`` (a :class:`clipft.scoring.EncodeOptions`)."""

    def decorate(func):
        @functools.wraps(func)
        def command(**kwargs):
            from ..catalogue import CatalogueSource
            from ..scoring import EncodeOptions

            encode = EncodeOptions(**{key: kwargs.pop(key) for key in _ENCODE_KEYS})
            chunk_size = {"chunk_size": kwargs.pop("chunk_size")} if chunked else {}
            source = CatalogueSource(**{key: kwargs.pop(key) for key in _SOURCE_KEYS}, **chunk_size,
                                     skip_bad=encode.skip_bad, cache_dir=encode.cache_dir)
            return func(source=source, encode=encode, **kwargs)

        return _apply(_reading_options(title_help, chunked), command)

    return decorate


def labeller_options(chunked: bool = True):
    """A trained run, the attributes to label with it and the catalogue, shared by predict and audit."""
    return lambda func: _apply([
        click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False),
                     help="A finished finetune or probe run folder (it holds labeller.json)."),
        catalogue_options("Column with product titles (default: the run's, when the CSV has it).", chunked),
        click.option("--attributes", default=None, callback=lambda ctx, param, value: (
            [a.strip() for a in value.split(",") if a.strip()] if value else None),
            help="Comma-separated attributes (default: every attribute the run labels)."),
    ], func)


def run_options(func):
    """--set overrides, --out and --quiet, shared by finetune, align, probe and curve."""
    return _apply([
        click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                     help="Override a config field, e.g. --set epochs=5 --set 'prompts=[color]'."),
        click.option("--out", required=True, type=click.Path(file_okay=False),
                     help="Run folder: config, splits, metrics per epoch, checkpoints, plots. An interrupted run resumes here."),
        click.option("--quiet", is_flag=True, help="No progress bars."),
    ], func)


def task_photo_options(func):
    """How Label Studio tasks name their photos (predict, suggest): the command receives ``photos``
    (a :class:`clipft.reporting.review.TaskPhotos`)."""
    @functools.wraps(func)
    def command(**kwargs):
        from ..reporting.review import TaskPhotos

        photos = TaskPhotos(kwargs.pop("image_url_prefix"), kwargs.pop("document_root"), kwargs.pop("embed_photos"))
        return func(photos=photos, **kwargs)

    return _apply([
        click.option("--image-url-prefix", default="", help="Prefix for photo paths in the Label Studio tasks "
                     "(with --document-root, default /data/local-files/?d=)."),
        click.option("--document-root", type=click.Path(file_okay=False, exists=True), default=None,
                     help="Label Studio's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT: tasks name photos relative to it, "
                     "behind /data/local-files/?d=."),
        click.option("--embed-photos", is_flag=True, help="Embed JPEG thumbnails in the Label Studio tasks: they "
                     "show with no Label Studio set-up (queues up to 500 tasks; larger ones name photos by path)."),
    ], command)
