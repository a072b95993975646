"""The ``clipft`` command line. Each command parses options, makes library calls and writes
the report; library errors become one-line messages that say what to fix. The review loop's
commands (import-labels, serve, suggest, app) are in :mod:`clipft.cli_review`."""
from __future__ import annotations

import logging
import time

import click

from .commands.errors import quiet_transformers, user_errors
from .cli_review import review_commands
from .commands.options import (CACHE_OPTION, catalogue_options, labeller_options, model_options, run_options,
                              task_photo_options)
from .defaults import CURVE_METHODS, TITLE_WEIGHT

INPUT_NAMES = {"image": "their photos", "text": "their titles", "fusion": "photo + title"}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="clipft")
@click.option("-v", "--verbose", is_flag=True, help="Show library log messages.")
def cli(verbose: bool) -> None:
    """Label product photos with their attributes using CLIP."""
    # clipft's own warnings (repaired CSV lines, missing label columns) always show; other
    # libraries' only with --verbose
    logging.basicConfig(level=logging.INFO if verbose else logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("clipft").setLevel(logging.INFO if verbose else logging.WARNING)
    if not verbose:
        quiet_transformers()


@cli.command()
def models() -> None:
    """List the architectures --model accepts."""
    from .models import list_models

    for name in list_models():
        click.echo(name)


@cli.command("sample-data")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for catalogue.csv and images/.")
@click.option("-n", "--n", "n", default=240, show_default=True, type=click.IntRange(min=1), help="Number of products.")
@click.option("--size", default=128, show_default=True, type=click.IntRange(min=16), help="Image side in pixels.")
@click.option("--seed", default=0, show_default=True, type=int)
def sample_data(out: str, n: int, size: int, seed: int) -> None:
    """Draw a small labelled product catalogue (t-shirts, mugs, pans) for trying clipft offline."""
    from .commands.sample_data import make_catalogue

    path = make_catalogue(out, n=n, size=size, seed=seed)
    click.echo(f"wrote {n} products to {path}")


@cli.command()
@click.option("--prompts", "prompt_files", multiple=True, required=True, type=click.Path(dir_okay=False),
              help="Prompt file, or the name of a shipped one (color, category, ...); repeat for several attributes.")
@catalogue_options("Column with product titles (default: title, productDisplayName or name when present).")
@click.option("--image-only", "inputs", flag_value="image", help="Ignore titles: score the photos alone.")
@click.option("--text-only", "inputs", flag_value="text", help="Score the titles alone (photos are not read).")
@click.option("--title-weight", default=TITLE_WEIGHT, show_default=True, type=click.FloatRange(0, 1),
              help="Weight of the title in image+title fusion (0: the photo alone, 1: the title alone).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for predictions.csv, metrics.json and plots.")
@model_options
def zeroshot(prompt_files, source, encode, inputs, title_weight, out, model, pretrained) -> None:
    """Score catalogue products against attribute prompts, zero-shot.

    When the catalogue has titles, each product is scored on its photo and its title fused
    (a weighted sum of the two unit embeddings; a product without a title falls back to its
    photo); --image-only and --text-only score one of them alone.

    Writes predictions.csv (per attribute: value, probability, top 3 and status: every label
    is 'review', since nothing calibrates a zero-shot labeller); where the catalogue has the
    attribute's column, also metrics.json, a confusion matrix per attribute, the most
    confident mistakes and a risk-coverage curve.
    """
    from .commands.zeroshot import run_zeroshot
    from .reporting.tables import summary_table

    with user_errors():
        done = run_zeroshot(source, prompt_files, out, model, pretrained, encode, inputs, title_weight)
    if done is None:
        return  # a torchrun rank other than 0: rank 0 reports
    totals, _ = done
    click.echo(f"scored {totals.scored} of {totals.rows} products on {INPUT_NAMES[totals.inputs]} "
               f"({totals.encoded} images encoded, the rest from the cache); skipped {totals.skipped}")
    if totals.metrics:
        click.echo(summary_table(totals.metrics))
    click.echo(f"results in {out}")


@cli.command()
@labeller_options()
@click.option("--target-precision", default=None, type=click.FloatRange(0, 1, min_open=True),
              help="Auto-accept a label when its calibrated confidence reaches a threshold at which, by the run's "
              "validation split, the auto-accepted labels reach this precision (default: the run's, 0.95).")
@click.option("--adapt-prior", is_flag=True, help="Probabilities assume the catalogue's own class frequencies, "
              "estimated without labels on its first chunk (EM prior adaptation), not those of the run's split.")
@click.option("--guarantee", default=None, type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="The probability with which the target precision holds on a new batch of products the size of "
              "the validation split (default: the run's, 0.95); more validation products allow more auto-accepted "
              "labels at a higher guarantee.")
@task_photo_options
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Folder for predictions.csv, review.csv, review_labelstudio.json and metrics.json.")
def predict(run_dir, source, encode, attributes, target_precision, adapt_prior, guarantee, photos, out) -> None:
    """Label a catalogue with a trained run, scored exactly as the run scored its test split.

    Each label gets a calibrated probability and a status: auto (its confidence reaches the
    threshold chosen on the run's validation split for the target precision) or review.
    review.csv lists what a person should check, most uncertain first, and
    review_labelstudio.json is the same queue as Label Studio tasks with the model's
    pre-annotations. Where the catalogue has label columns, metrics.json reports coverage and
    accuracy of the auto-labelled part, and risk_coverage.png plots one against the other.
    """
    from .commands.predict import run_predict
    from .reporting.tables import review_table

    with user_errors():
        totals = run_predict(run_dir, source, out, encode, attributes, target_precision, photos, guarantee=guarantee,
                             adapt_prior=adapt_prior)
    if totals is None:
        return
    click.echo(f"labelled {totals.scored} of {totals.rows} products ({totals.encoded} photos encoded, the rest from "
               f"the cache); skipped {totals.skipped}; {totals.review} label(s) sent to review")
    if totals.metrics:
        click.echo(review_table(totals.metrics))
    click.echo(f"results in {out}")


@cli.command()
@labeller_options(chunked=False)
@click.option("--folds", default=5, show_default=True, type=click.IntRange(min=2),
              help="Cross-validation folds for the out-of-sample probabilities.")
@click.option("--top", default=24, show_default=True, type=click.IntRange(min=1), help="Suspects shown per contact sheet.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Folder for label_issues.csv, suspects_<attribute>.png and summary.json.")
def audit(run_dir, source, encode, attributes, folds, top, out) -> None:
    """Find catalogue labels that a trained run confidently contradicts.

    Every labelled product gets out-of-sample class probabilities (a logistic regression on the
    run's product features, cross-validated over the catalogue, so the run's own training rows
    are never scored by a classifier that saw their labels); cleanlab's confident learning then
    picks the likely label errors. label_issues.csv lists them, most suspicious first, with the
    suggested value; suspects_<attribute>.png shows the top ones.
    """
    from .commands.audit import run_audit

    with user_errors():
        table, summary = run_audit(run_dir, source, out, encode, attributes, folds, top)
    for name, counts in summary.items():
        click.echo(f"{name}: {counts.get('issues', 0)} suspect label(s) among {counts['audited']} products")
    click.echo(f"results in {out}/label_issues.csv")


def print_comparison(comparison) -> None:
    from .reporting.tables import comparison_text

    click.echo(comparison_text(comparison))


def _finetune(config, overrides, out, quiet) -> None:
    from .training.config import load_config
    from .commands.finetune import run_finetune

    with user_errors():
        cfg = load_config(config, overrides)
        result = run_finetune(cfg, out, progress=not quiet)
    if result is None:
        return  # a torchrun rank other than 0: rank 0 reports
    click.echo(f"best epoch {result.best_epoch} ({result.stopped}); trained in {result.train_seconds:.1f}s; "
               f"splits {result.split_sizes}")
    click.echo("test split:")
    print_comparison(result.comparison)
    click.echo(f"run folder: {out}")




@cli.command()
@click.option("--config", type=click.Path(dir_okay=False), default=None,
              help="Training recipe: a YAML file, or the name of a shipped one (photos, titles, curve, "
              "align-lite0-minilm), which names no data: add --set data=CATALOGUE.csv.")
@run_options
def finetune(config, overrides, out, quiet) -> None:
    """Contrastively fine-tune on labelled photos (or align on titles) and compare with zero-shot.

    Captions are the bare class value by default (captions=label), the prompt file's templates
    (captions=template) or product titles (captions=title). Batches are balanced over classes;
    the epoch with the lowest validation loss is kept as best.pt, which loads anywhere
    --pretrained is accepted. See the shipped recipes (clipft/resources/configs/) and the config
    sections in clipft/training/config.py (docs/finetuning.md).
    """
    _finetune(config, overrides, out, quiet)


@cli.command()
@click.option("--config", type=click.Path(dir_okay=False), default="align-lite0-minilm",
              show_default=True,
              help="Alignment recipe: a YAML file or a shipped name; add --set data=...")
@run_options
def align(config, overrides, out, quiet) -> None:
    """Align lite0-minilm on photo-title pairs: `finetune` with the alignment recipe."""
    _finetune(config, overrides, out, quiet)


@cli.command()
@click.option("--config", type=click.Path(dir_okay=False), default=None,
              help="Training recipe: a YAML file or a shipped name (photos, titles, ...): data, prompts, model, split, shots.")
@click.option("--classifier", "classifiers", multiple=True, default=("logistic",), show_default=True,
              type=click.Choice(["logistic", "svm", "mlp", "forest"]),
              help="scikit-learn classifier (logistic regression, linear SVM, MLP, random forest); repeat for several.")
@click.option("--inputs", "inputs", multiple=True, default=("image",), show_default=True,
              type=click.Choice(["image", "text", "fusion"]),
              help="Image embeddings, title embeddings, or both concatenated (fusion); repeat for several.")
@run_options
def probe(config, classifiers, inputs, overrides, out, quiet) -> None:
    """Baselines: scikit-learn classifiers on frozen (cached) embeddings, trained on the same
    split and training examples as `finetune` (the same config), scored on its test split with
    titles present and removed. Regularisation is chosen on validation. Writes probe.csv."""
    from .training.config import load_config
    from .commands.probe import run_probe

    with user_errors():
        cfg = load_config(config, overrides)
        table = run_probe(cfg, out, tuple(dict.fromkeys(classifiers)), tuple(dict.fromkeys(inputs)),
                          progress=not quiet)
    if len(table):
        click.echo("test split:\n" + table.pivot_table(index=["attribute", "classifier", "inputs"], columns="titles",
                                                       values=["accuracy", "macro_f1"], sort=False)
                   .to_string(float_format=lambda v: f"{v:.3f}"))
    click.echo(f"results in {out}/probe.csv")


@cli.command()
@click.option("--config", type=click.Path(dir_okay=False), default=None,
              help="Training recipe: a YAML file or a shipped name (curve, ...): data, prompts (one curve per attribute), "
              "model, optimisation.")
@click.option("--sizes", default="1,2,4,8,16,32,64,all", show_default=True,
              help="Labels per class to train on, comma-separated ('all': the whole train split).")
@click.option("--seeds", default="0,1,2", show_default=True, help="Seeds (training sample and initial order), comma-separated.")
@click.option("--method", "methods", multiple=True, default=CURVE_METHODS, show_default=True,
              type=click.Choice(CURVE_METHODS),
              help="Methods to train (GDA and Tip-Adapter: closed form on cached embeddings, blended with zero-shot); "
              "zero-shot and majority-class lines are always drawn, and 'best on validation' is derived.")
@click.option("--adapt-prior/--no-adapt-prior", default=True, show_default=True,
              help="Each method may take the test products' own class frequencies, estimated without labels "
              "(EM prior adaptation), where it is more accurate on validation.")
@run_options
def curve(config, sizes, seeds, methods, adapt_prior, overrides, out, quiet) -> None:
    """Learning curves: test accuracy against labelled photos per attribute, over seeds.

    Writes curve.csv (one row per attribute, method, size, seed, with 'best on validation':
    the method most accurate on validation; a rerun skips finished points),
    curve_<attribute>.png and labels_needed.{csv,md} (labels per class needed to reach 90%
    and 100% of the accuracy with the whole train split)."""
    from .training.config import load_config
    from .commands.curve import parse_sizes, run_curve
    from .reporting.tables import labels_needed

    start = time.perf_counter()
    with user_errors():
        cfg = load_config(config, overrides)
        try:
            size_list = parse_sizes(sizes)
        except ValueError as err:
            raise click.BadParameter(str(err), param_hint="--sizes") from err
        bad = [s for s in seeds.split(",") if not s.strip().lstrip("-").isdigit()]
        if bad:
            raise click.BadParameter(f"{bad[0]!r} is not an integer", param_hint="--seeds")
        seed_list = [int(s) for s in seeds.split(",")]
        table = run_curve(cfg, out, size_list, seed_list, tuple(dict.fromkeys(methods)), progress=not quiet,
                          adapt_prior=adapt_prior)
    needed = labels_needed(table)
    if len(needed):
        click.echo(needed.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    else:
        click.echo("labels needed: add the size 'all' to compare with the whole train split")
    click.echo(f"{len(table)} points in {out}/curve.csv ({time.perf_counter() - start:.0f}s)")


@cli.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False, exists=True))
@click.option("--out", default="report.html", show_default=True, type=click.Path(dir_okay=False),
              help="The HTML file to write (one file, images inlined).")
def report(run_dirs, out) -> None:
    """One self-contained HTML page for zeroshot, finetune, probe, predict or curve runs.

    A headline table (several runs side by side), then per run: metrics, confusion matrices,
    training and learning curves, the risk-coverage curve of predict runs and a gallery of the
    most confident mistakes with thumbnails. Opens offline in any browser.
    """
    from .reporting.html_report import write_report

    with user_errors():
        path = write_report(run_dirs, out)
    click.echo(f"report in {path}")


@cli.command()
@click.option("--out", default="demo", show_default=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("-n", "--n", "n", default=600, show_default=True, type=click.IntRange(min=60), help="Products to draw.")
@click.option("--shots", default=8, show_default=True, type=click.IntRange(min=1), help="Labels per class for fine-tuning.")
@click.option("--prompts-dir", default=None, type=click.Path(file_okay=False),
              help="Folder with color.yaml, colours.yaml, sleeve.yaml and lid.yaml (default: the shipped prompt files).")
@CACHE_OPTION
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--quiet", is_flag=True, help="No progress bars.")
def demo(out, n, shots, prompts_dir, cache_dir, seed, quiet) -> None:
    """Offline end to end: draw a catalogue, align lite0-minilm on its titles, score the test
    split zero-shot, fine-tune on a few labels per class, and compare (table + plots)."""
    from .commands.demo import run_demo
    from .reporting.tables import review_table

    start = time.perf_counter()
    with user_errors():
        table, review = run_demo(out, prompts_dir, n=n, shots=shots, seed=seed, cache_dir=cache_dir, progress=not quiet)
    click.echo(f"\ntest split, {n} generated products ({time.perf_counter() - start:.0f}s):")
    print_comparison(table)
    click.echo(f"\nlabelling the {review.scored} held-out products with the fine-tuned run (clipft predict): "
               f"{review.review} label(s) sent to review ({out}/predict/review.csv)")
    click.echo(review_table(review.metrics))
    click.echo(f"tables and plots in {out}/ (report.html, comparison.png, align/, finetune/, predict/)")


for command in review_commands():  # import-labels, serve, suggest, app: clipft/cli_review.py
    cli.add_command(command)


def main() -> None:
    cli(prog_name="clipft")
