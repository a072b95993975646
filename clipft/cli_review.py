"""The review loop's commands: ``import-labels`` (people's answers back into the catalogue),
``serve`` (a Label Studio ML backend), ``suggest`` (which products to label next) and ``app``
(try a labeller on one photo). Like :mod:`clipft.cli`, they parse options and make library
calls; the ``clipft`` group adds them."""
from __future__ import annotations

from pathlib import Path

import click

from .commands.errors import user_errors
from .commands.options import CACHE_OPTION, DEVICE_OPTION, catalogue_options, model_options, task_photo_options


@click.command("import-labels")
@click.option("--labelstudio", "export", required=True, type=click.Path(dir_okay=False),
              help="Label Studio export of the review tasks (from review_labelstudio.json): JSON, JSON_MIN or CSV.")
@click.option("--data", required=True, type=click.Path(dir_okay=False), help="The catalogue CSV the tasks came from.")
@click.option("--id-column", default="id", show_default=True, help="Column with product ids.")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="Corrected catalogue CSV (and <out>.changes.csv listing every change).")
@click.option("--config", type=click.Path(dir_okay=False, exists=True), default=None,
              help="labelstudio_config.xml from predict's folder: answers must be its questions and classes, a "
              "question the catalogue lacks adds its column; needed for JSON_MIN and CSV exports.")
def import_labels(export, data, id_column, out, config) -> None:
    """Apply the labels people gave in Label Studio to the catalogue: the corrected CSV (its photo
    paths valid from its own folder) can be fine-tuned on again (clipft finetune --set data=...)."""
    from .commands.import_labels import apply_label_studio_export

    with user_errors():
        changes = apply_label_studio_export(export, data, out, id_column, config)
    click.echo(f"{len(changes)} label(s) changed; corrected catalogue in {out}")


@click.command()
@click.option("--run", "runs", multiple=True, type=click.Path(file_okay=False, exists=True),
              help="A finetune or probe run folder to label with; repeat for several.")
@click.option("--prompts", "prompt_files", multiple=True, help="Prompt files for zero-shot (default: the shipped ones).")
@click.option("--model", default=None, help="Also offer zero-shot with this model (default when no --run: lite0-minilm).")
@click.option("--pretrained", default=None, help="Weights for --model (as in zeroshot).")
@DEVICE_OPTION
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (0.0.0.0 shares it on the network).")
@click.option("--port", default=7860, show_default=True, type=click.IntRange(1, 65535))
@CACHE_OPTION
def app(runs, prompt_files, model, pretrained, device, host, port, cache_dir) -> None:
    """A local web page to try labellers on one photo (and its title).

    Shows every attribute's top values with calibrated probabilities and whether the label
    would be auto-accepted or sent to review; several runs, and zero-shot with prompt files,
    can be picked from a list. Needs Gradio (pip install 'clipft[app]'); starts offline.
    """
    import tempfile

    from .commands.app import load_labellers, run_app
    from .models import resolve_device

    try:
        import gradio  # noqa: F401
    except ImportError:
        raise click.ClickException("clipft app needs Gradio: pip install 'clipft[app]'") from None
    with user_errors():
        labellers = load_labellers(runs, prompt_files, model, pretrained, resolve_device(device), cache_dir)
    click.echo(f"labellers: {', '.join(labellers)}; open http://{host}:{port} (Ctrl-C to stop)")
    run_app(labellers, Path(tempfile.mkdtemp(prefix="clipft-app-")), host, port)


@click.command()
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="A finished finetune or probe run folder (it holds labeller.json).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; any but loopback needs --token.")
@click.option("--port", default=9090, show_default=True, type=click.IntRange(0, 65535))
@click.option("--token", default=None, envvar="CLIPFT_SERVE_TOKEN",
              help="Every request must send 'Authorization: Token <token>' (or it as basic auth's password). "
              "Default: $CLIPFT_SERVE_TOKEN.")
@click.option("--document-root", default=None, type=click.Path(file_okay=False, exists=True),
              help="Folder that task photos named by path or /data/local-files/?d= are read under "
              "(Label Studio's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT; default: the current folder).")
@DEVICE_OPTION
@CACHE_OPTION
def serve(run_dir, host, port, token, document_root, device, cache_dir) -> None:
    """A run as a Label Studio ML backend: pre-annotations for every new task.

    Answers Label Studio's ML backend protocol (GET /health, POST /setup, POST /predict,
    POST /webhook): each task's photo (and title) gets one choice per attribute that applies,
    scored by its calibrated probability. Connect it in the project's Model settings.
    """
    from .commands.serve import ServeError, check_binding, load_backend, make_server
    from .models import resolve_device

    try:
        check_binding(host, token)
        with user_errors():
            server = make_server(load_backend(run_dir, resolve_device(device), cache_dir, document_root),
                                 host, port, token)
    except ServeError as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"clipft serve: {run_dir} on http://{host}:{server.server_address[1]} "
               f"({'token required' if token else 'no token'}; Ctrl-C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@click.command()
@click.option("--run", "run_dir", default=None, type=click.Path(file_okay=False, exists=True),
              help="A finished finetune or probe run folder to score with.")
@click.option("--prompts", "prompt_files", multiple=True, type=click.Path(dir_okay=False),
              help="Prompt files (or shipped names) to score zero-shot with --model instead of a run; repeat for several.")
@model_options
@catalogue_options("Column with product titles (default: the run's, when the CSV has it).", chunked=False)
@click.option("--budget", required=True, type=click.IntRange(min=1), help="How many products to suggest.")
@click.option("--strategy", default="typiclust", show_default=True,
              type=click.Choice(["typiclust", "random", "margin", "entropy", "balanced", "coreset", "badge",
                                 "weighted"]),
              help="How to choose (docs/review-backend.md compares them).")
@task_photo_options
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Folder for suggestions.csv, suggest_labelstudio.json and labelstudio_config.xml.")
def suggest(run_dir, prompt_files, model, pretrained, source, encode, budget, strategy, photos, out) -> None:
    """Choose the unlabelled products most worth labelling next.

    Scores the catalogue with a run (or zero-shot prompt files) and picks --budget products
    that the catalogue has no labels for, by --strategy; writes them as Label Studio tasks
    pre-annotated with the model's labels, and suggestions.csv (rank, id, image, uncertainty).
    """
    if (run_dir is None) == (not prompt_files):
        raise click.UsageError("give either --run or --prompts (with --model)")
    from .commands.suggest import run_suggest
    from .labeller import Labeller
    from .models import resolve_device

    device = resolve_device(encode.device)
    with user_errors():
        labeller = (Labeller.load(run_dir, device, encode.cache_dir) if run_dir else
                    Labeller.from_prompts(prompt_files, model, pretrained, device, encode.cache_dir))
        found = run_suggest(labeller, source, out, budget, encode, strategy, source.seed, photos,
                            str(run_dir) if run_dir else model)
    click.echo(f"suggested {len(found.chosen)} of {found.candidates} unlabelled products ({found.labelled} labelled "
               f"already) by {strategy}; tasks in {out}/suggest_labelstudio.json")


def review_commands() -> list[click.Command]:
    return [import_labels, serve, suggest, app]
