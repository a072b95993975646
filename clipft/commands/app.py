"""``clipft app``: a local web page (Gradio) to try a labeller on one photo: upload or paste it,
optionally type its title, and see every attribute's top values with calibrated probabilities
and whether the label would be auto-accepted or sent to review. Trained runs and zero-shot
prompt files can be put side by side; example photos come from the demo's generated catalogue.

Gradio is imported only here, and started offline: no analytics, no version check, no share
link, bound to localhost unless told otherwise."""
from __future__ import annotations

import html
import io
import os
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from ..applicability import applies
from ..catalogue import to_rgb
from ..labeller import Labeller
from ..reporting.results import label_status
from ..shipped import shipped_names
from .sample_data import make_catalogue

ZERO_SHOT = "zero-shot (prompt files)"
TOP = 3


class PhotoError(ValueError):
    """An upload that is not a photo; the message names the file."""


def open_photo(path: str | os.PathLike | io.BytesIO, name: str | None = None) -> Image.Image:
    """The uploaded file (or bytes, named ``name`` in messages) as an RGB photo, or a PhotoError
    saying why it is not one."""
    name = name or Path(path).name
    try:
        with Image.open(path) as img:
            return to_rgb(img)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
        raise PhotoError(f"{name}: not an image clipft can read ({type(err).__name__}); upload a JPEG, PNG or WebP photo") from None


def label_photo(labeller: Labeller, photo: Image.Image, title: str | None = None, top: int = TOP) -> pd.DataFrame:
    """Per attribute, its ``top`` values (best first) with calibrated probabilities; the best
    one's status: auto (its confidence reaches the run's threshold), review, or n/a (the
    attribute does not apply to what the photo shows, by the labeller's own predictions)."""
    proba = labeller.predict_proba([photo], [title or None])
    predicted = {a: labeller.heads[a].classes[p.argmax(axis=1)] for a, p in proba.items()}
    applying = applies([h.spec for h in labeller.heads.values()], None, [0], predicted)
    rows = []
    for attribute, p in proba.items():
        head, p = labeller.heads[attribute], p[0]
        if not applying[attribute][0]:  # e.g. a lid on a t-shirt: the attribute does not apply
            rows.append({"attribute": attribute, "rank": 1, "value": "", "probability": float("nan"), "status": "n/a"})
            continue
        best = np.argsort(-p)[:top]
        status = label_status(head, head.classes[best[:1]], p[best[:1]], np.ones(1, dtype=bool))[0]
        for rank, index in enumerate(best):
            rows.append({"attribute": attribute, "rank": rank + 1, "value": str(head.classes[index]),
                         "probability": float(p[index]), "status": status if rank == 0 else ""})
    return pd.DataFrame(rows)


def results_html(table: pd.DataFrame, source: str) -> str:
    """The labels as an HTML table, the best value of each attribute in bold with its status."""
    lines = [f"<p>Labelled by <b>{html.escape(source)}</b></p>",
             '<table id="labels"><tr><th>attribute</th><th>value</th><th>probability</th><th>status</th></tr>']
    for row in table.itertuples():
        value = f"<b>{html.escape(row.value)}</b>" if row.rank == 1 else html.escape(row.value)
        lines.append(f'<tr class="rank{row.rank}"><td>{html.escape(row.attribute) if row.rank == 1 else ""}</td>'
                     f"<td>{value}</td><td>{'' if row.status == 'n/a' else f'{row.probability:.3f}'}</td>"
                     f"<td>{row.status}</td></tr>")
    return "\n".join(lines + ["</table>"])


def load_labellers(runs, prompts, model: str | None, pretrained: str | None, device: str,
                   cache_dir=None) -> dict[str, Labeller]:
    """One labeller per run folder (named by the folder), plus zero-shot on the prompt files
    (the shipped ones when none are given) when a model is named or no run is."""
    labellers = {Path(run).name or str(run): Labeller.load(run, device, cache_dir) for run in runs}
    if model is not None or not labellers:
        prompt_files = list(prompts) or shipped_names("prompts")
        labellers[ZERO_SHOT] = Labeller.from_prompts(prompt_files, model or "lite0-minilm", pretrained, device, cache_dir)
    return labellers


def example_photos(folder: Path, n: int = 6, seed: int = 0) -> list[list[str]]:
    """[photo, title] pairs drawn from the demo's generated catalogue."""
    catalogue = pd.read_csv(make_catalogue(folder, n=n, size=160, seed=seed), dtype=str)
    return [[str(folder / image), title] for image, title in zip(catalogue["image"], catalogue["title"])]


def build_app(labellers: dict[str, Labeller], examples: list[list[str]]):
    """The Gradio page: photo (upload or example), optional title, labeller picker -> labels."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    def run(photo_path, title, source):
        if not photo_path:
            raise gr.Error("Upload a photo first.")
        try:
            photo = open_photo(photo_path)
        except PhotoError as err:
            raise gr.Error(str(err)) from None
        return photo, results_html(label_photo(labellers[source], photo, title), source)

    with gr.Blocks(title="clipft: label a product photo", analytics_enabled=False) as page:
        gr.Markdown("# clipft: label a product photo\nUpload a photo (and its title, if it has one); "
                    "each attribute shows its top values and whether the label would be auto-accepted or reviewed.")
        with gr.Row():
            with gr.Column():
                upload = gr.File(label="Photo", file_types=["image"], type="filepath", elem_id="photo")
                title = gr.Textbox(label="Title (optional)", elem_id="title")
                source = gr.Dropdown(list(labellers), value=next(iter(labellers)), label="Labeller", elem_id="source")
                button = gr.Button("Label", variant="primary", elem_id="label")
            with gr.Column():
                shown = gr.Image(label="What the model sees", type="pil", interactive=False)
                labels = gr.HTML(elem_id="labels-out")
        gr.Examples(examples, inputs=[upload, title], label="Example photos (the demo catalogue)")
        button.click(run, inputs=[upload, title, source], outputs=[shown, labels])
    return page


def run_app(labellers: dict[str, Labeller], examples_dir: Path, host: str = "127.0.0.1", port: int = 7860,
            block: bool = True):
    """Start the page; returns the Gradio app (and blocks until Ctrl-C when ``block``)."""
    page = build_app(labellers, example_photos(examples_dir))
    page.launch(server_name=host, server_port=port, share=False, prevent_thread_lock=not block,
                show_error=True, allowed_paths=[str(examples_dir)])
    return page
