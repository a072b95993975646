"""``clipft report``: one self-contained HTML page (every image inlined, no network) for one or
several run folders, built from the files the runs wrote: a headline table (runs side by side),
then per run its metrics, confusion matrices, training and learning curves, the review queue's
risk-coverage curve and a gallery of the most confident mistakes (mistakes.csv)."""
from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from PIL import Image

from ..catalogue import to_rgb
from ..fileio import atomic_write
from .tables import labels_needed, model_label

KINDS = ("finetune", "probe", "curve", "zeroshot", "predict")
THUMBNAIL = 112
STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}figure{display:inline-block;margin:.3em;vertical-align:top}
figure img.plot{max-width:560px}figcaption{font-size:.8em;max-width:560px}
.gallery figure{width:130px}.gallery figcaption{font-size:.75em}.run{border-top:2px solid #888;margin-top:2em}"""


class ReportError(ValueError):
    """A folder that is not a clipft run; the message names it."""


@dataclass
class RunFolder:
    path: Path
    kind: str
    info: dict  # metrics.json of zeroshot and predict runs, else {}

    @property
    def name(self) -> str:
        return self.path.name or str(self.path)


def open_run(path: str | Path) -> RunFolder:
    """Which command wrote ``path``, from the files it left there."""
    path = Path(path)
    for kind, marker in (("curve", "curve.csv"), ("finetune", "comparison.csv"), ("probe", "probe.csv")):
        if (path / marker).is_file():
            return RunFolder(path, kind, {})
    if (path / "metrics.json").is_file():
        info = json.loads((path / "metrics.json").read_text(encoding="utf-8"))
        kind = info.get("run", {}).get("command")
        if kind in KINDS:
            return RunFolder(path, kind, info)
    raise ReportError(f"{path}: not a clipft run folder (no comparison.csv, probe.csv, curve.csv or metrics.json)")


def headline(run: RunFolder) -> pd.DataFrame:
    """Per attribute (rows), the run's main figures (columns): test accuracy per model for
    training runs, the metrics of scoring runs, labels needed for curves."""
    if run.kind == "finetune":
        table = pd.read_csv(run.path / "comparison.csv")
        table = table.assign(model=model_label(table))[table["titles"] == "present"]
        return table.pivot_table(index="attribute", columns="model", values="accuracy", sort=False)
    if run.kind == "probe":
        table = pd.read_csv(run.path / "probe.csv")
        table = table[table["titles"] == "present"].assign(model=lambda t: t["classifier"] + " (" + t["inputs"] + ")")
        return table.pivot_table(index="attribute", columns="model", values="accuracy", sort=False)
    if run.kind == "curve":
        needed = labels_needed(pd.read_csv(run.path / "curve.csv", dtype={"size": str}))
        return needed.set_index(["attribute", "method"])
    wanted = ["n", "accuracy", "macro_f1", "coverage", "auto_accuracy", "threshold"]
    frame = pd.DataFrame(run.info.get("attributes", {})).T
    frame = frame[[c for c in wanted if c in frame.columns]].apply(pd.to_numeric)
    return frame.astype({"n": "Int64"}).rename_axis("attribute")


def side_by_side(runs: list[RunFolder]) -> pd.DataFrame:
    """The headline tables of several runs joined on attribute, each under its run's name."""
    tables = {run.name: headline(run) for run in runs if run.kind != "curve"}
    tables = {name: table for name, table in tables.items() if len(table)}
    return pd.concat(tables, axis=1) if tables else pd.DataFrame()


def table_html(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "<p>(no labelled attributes)</p>"
    return frame.to_html(float_format=lambda v: f"{v:.3f}", na_rep="-", border=0)


def image_data(path: Path, size: int | None = None) -> str:
    """An image file as a data: URI (PNG plots as they are; photos as small JPEG thumbnails)."""
    if size is None:
        return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()
    with Image.open(path) as img:
        thumb = to_rgb(img)
        thumb.thumbnail((size, size))
    buffer = io.BytesIO()
    thumb.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def plots_html(run: RunFolder) -> str:
    """Every plot the run wrote (confusion matrices, training and learning curves, risk-coverage)."""
    figures = [f'<figure><img class="plot" src="{image_data(p)}" alt="{html.escape(p.stem)}">'
               f"<figcaption>{html.escape(p.name)}</figcaption></figure>" for p in sorted(run.path.glob("*.png"))]
    return "".join(figures) or "<p>(no plots)</p>"


def gallery_html(run: RunFolder, per_attribute: int = 12) -> str:
    """The most confident mistakes per attribute: thumbnail, true -> predicted, probability."""
    path = run.path / "mistakes.csv"
    if not path.is_file():
        return ""
    mistakes = pd.read_csv(path, dtype={"id": str, "label": str, "predicted": str})
    parts = []
    for attribute, group in mistakes.groupby("attribute", sort=False):
        figures = [_mistake_figure(row) for row in group.head(per_attribute).itertuples()]
        parts.append(f"<h4>{html.escape(str(attribute))}: most confident mistakes</h4>"
                     f"<div class=\"gallery\">{''.join(figures)}</div>")
    return "".join(parts) or "<p>(no mistakes on the labelled products)</p>"


def _mistake_figure(row) -> str:
    image = Path(row.image)
    src = image_data(image, THUMBNAIL) if image.is_file() else ""
    caption = f"{html.escape(row.label)} &rarr; {html.escape(row.predicted)} ({row.probability:.2f})<br>id {html.escape(row.id)}"
    return f'<figure><img src="{src}" alt="product {html.escape(row.id)}"><figcaption>{caption}</figcaption></figure>'


def run_section(run: RunFolder) -> str:
    return (f'<section class="run"><h2>{html.escape(run.name)} <small>({run.kind})</small></h2>'
            f"<p>{html.escape(str(run.path))}</p><h3>Results</h3>{table_html(headline(run))}"
            f"<h3>Plots</h3>{plots_html(run)}{gallery_html(run)}</section>")


def write_report(run_dirs, out: str | Path) -> Path:
    """Write the report of ``run_dirs`` to ``out``; returns its path."""
    runs = [open_run(p) for p in run_dirs]
    title = "clipft report: " + ", ".join(run.name for run in runs)
    body = [f"<h1>{html.escape(title)}</h1>"]
    if len(runs) > 1:
        body.append(f"<h2>Side by side (test accuracy and metrics)</h2>{table_html(side_by_side(runs))}")
    body += [run_section(run) for run in runs]
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>")
    with atomic_write(out, encoding="utf-8") as f:
        f.write(page)
    return Path(out)
