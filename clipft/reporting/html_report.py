"""``clipft report``: one self-contained HTML page (every image inlined, no network) for one or
several run folders, built from the files the runs wrote: a headline table (runs side by side),
then per run its metrics, confusion matrices, training and learning curves, the review queue's
risk-coverage curve and a gallery of the most confident mistakes (mistakes.csv).

A run folder may come from someone else: only image files inside it are inlined (a link to a
file elsewhere is left out, so the page never carries another file's bytes), a mistake's photo is
inlined only from the run folder, the current folder or the scored catalogue's folder, a photo
named by URL is linked, never fetched, and a photo that cannot be shown is a placeholder, not a stop."""
from __future__ import annotations

import base64
import html
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from PIL import Image

from ..catalogue import to_rgb
from ..fileio import INCOMPLETE_FILE, atomic_write
from ..photo_download import is_url
from .scoring_outputs import TEST_FOLDER
from .tables import labels_needed, model_label

log = logging.getLogger(__name__)

KINDS = ("finetune", "probe", "curve", "zeroshot", "predict")
THUMBNAIL = 112
STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}figure{display:inline-block;margin:.3em;vertical-align:top}
figure img.plot{max-width:560px}figcaption{font-size:.8em;max-width:560px}
.gallery figure{width:130px}.gallery figcaption{font-size:.75em}.run{border-top:2px solid #888;margin-top:2em}"""
IMAGE_MAGIC = {b"\x89PNG\r\n\x1a\n": "image/png", b"\xff\xd8\xff": "image/jpeg"}
MISTAKE_COLUMNS = ["attribute", "id", "image", "label", "predicted", "probability"]


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
    """Which command wrote ``path``, from the files it left there. A folder whose run died while
    moving its outputs in may mix two runs' files, so it is refused."""
    path = Path(path)
    if (path / INCOMPLETE_FILE).exists():
        raise ReportError(f"{path}: a run stopped while moving its outputs in (it left {INCOMPLETE_FILE}); "
                          f"run that command again before reporting on it")
    for kind, marker in (("curve", "curve.csv"), ("finetune", "comparison.csv"), ("probe", "probe.csv")):
        if (path / marker).is_file():
            return RunFolder(path, kind, {})
    if (path / "metrics.json").is_file():
        info = read_metrics(path / "metrics.json")
        kind = info.get("run", {}).get("command")
        if kind in KINDS:
            return RunFolder(path, kind, info)
    raise ReportError(f"{path}: not a clipft run folder (no comparison.csv, probe.csv, curve.csv or metrics.json)")


def read_metrics(path: Path) -> dict:
    """metrics.json of a scoring run; one that is not a JSON object is named, not a traceback."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # JSON and UTF-8 errors are ValueErrors
        raise ReportError(f"{path}: not a readable metrics file ({err})") from None
    if not isinstance(info, dict) or not isinstance(info.get("run", {}), dict):
        raise ReportError(f"{path}: not a clipft metrics file (expected an object with a 'run' object)")
    attributes = info.get("attributes", {})
    if not isinstance(attributes, dict) or not all(isinstance(a, dict) for a in attributes.values()):
        # headline() builds a table from it: anything else is a pandas error, not a named file
        raise ReportError(f"{path}: not a clipft metrics file ('attributes' must map each attribute to its metrics)")
    return info


def read_table(path: Path, columns, na_values=("",), **options) -> pd.DataFrame:
    """A CSV the run wrote. Only ``na_values`` (empty cells) are missing values: pandas would read
    classes and ids named NA, None or null as missing too, and the report would stop on them."""
    try:
        table = pd.read_csv(path, keep_default_na=False, na_values=list(na_values), **options)
    except (OSError, ValueError) as err:  # pandas' parser errors are ValueErrors
        raise ReportError(f"{path}: not a readable CSV table ({err})") from None
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ReportError(f"{path}: no column {', '.join(missing)}; was it written by clipft?")
    return table


def headline(run: RunFolder) -> pd.DataFrame:
    """Per attribute (rows), the run's main figures (columns): test accuracy per model for
    training runs, the metrics of scoring runs, labels needed for curves."""
    if run.kind == "finetune":
        table = read_table(run.path / "comparison.csv", ["attribute", "model", "alpha", "titles", "accuracy"])
        table = table.assign(model=model_label(table))[table["titles"] == "present"]
        return table.pivot_table(index="attribute", columns="model", values="accuracy", sort=False)
    if run.kind == "probe":
        table = read_table(run.path / "probe.csv", ["attribute", "classifier", "inputs", "titles", "accuracy"])
        table = table[table["titles"] == "present"].assign(model=lambda t: t["classifier"] + " (" + t["inputs"] + ")")
        return table.pivot_table(index="attribute", columns="model", values="accuracy", sort=False)
    if run.kind == "curve":
        curve = read_table(run.path / "curve.csv", ["attribute", "method", "size", "accuracy", "n_train"],
                           dtype={"size": str})
        needed = labels_needed(curve)
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


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def thumbnail_data(path: Path, size: int) -> str:
    """A photo as a small JPEG thumbnail (data: URI)."""
    with Image.open(path) as img:
        thumb = to_rgb(img)
        thumb.thumbnail((size, size))
    buffer = io.BytesIO()
    thumb.save(buffer, format="JPEG", quality=85)
    return data_uri(buffer.getvalue(), "image/jpeg")


def placeholder(text: str, size: int = THUMBNAIL) -> str:
    """A grey square saying why a photo is not shown (SVG data: URI), so the gallery keeps its layout."""
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}"><rect width="100%" height="100%" '
           f'fill="#eee"/><text x="50%" y="50%" font-size="11" text-anchor="middle" fill="#666">'
           f"{html.escape(text)}</text></svg>")
    return data_uri(svg.encode(), "image/svg+xml")


def plot_image(path: Path, root: Path) -> str | None:
    """A plot of the run folder ``root`` as a data: URI, or None (logged) when it is not a PNG or
    JPEG file inside the folder: a link in a shared run folder must not put, say, a key file into
    the page."""
    target = path.resolve()
    if not target.is_relative_to(root):
        log.warning("%s: left out of the report: it links to %s, outside the run folder", path, target)
        return None
    if not target.is_file():  # folders, FIFOs, broken links
        log.warning("%s: left out of the report: not a regular file", path)
        return None
    data = target.read_bytes()
    mime = next((m for magic, m in IMAGE_MAGIC.items() if data.startswith(magic)), None)
    if mime is None:
        log.warning("%s: left out of the report: not a PNG or JPEG image", path)
        return None
    return data_uri(data, mime)


def plots_html(run: RunFolder) -> str:
    """Every plot the run wrote (confusion matrices, training and learning curves, risk-coverage)."""
    root = run.path.resolve()
    plots = [(p, plot_image(p, root)) for p in sorted(run.path.glob("*.png"))]
    figures = [f'<figure><img class="plot" src="{src}" alt="{html.escape(p.stem)}">'
               f"<figcaption>{html.escape(p.name)}</figcaption></figure>" for p, src in plots if src]
    return "".join(figures) or "<p>(no plots)</p>"


def gallery_html(run: RunFolder, per_attribute: int = 12) -> str:
    """The most confident mistakes per attribute: thumbnail, true -> predicted, probability."""
    path = run.path / "mistakes.csv"
    if not path.is_file():
        return ""
    # every column as text, none missing: a class or id named NA or None is a name
    mistakes = read_table(path, MISTAKE_COLUMNS, na_values=(), dtype=str)
    mistakes["probability"] = pd.to_numeric(mistakes["probability"], errors="coerce")
    parts, roots = [], photo_roots(run)
    for attribute, group in mistakes.groupby("attribute", sort=False):
        figures = [_mistake_figure(run, roots, row) for row in group.head(per_attribute).itertuples()]
        parts.append(f"<h4>{html.escape(attribute)}: most confident mistakes</h4>"
                     f"<div class=\"gallery\">{''.join(figures)}</div>")
    return "".join(parts) or "<p>(no mistakes on the labelled products)</p>"


def photo_roots(run: RunFolder) -> list[Path]:
    """The folders a mistake's photo may be inlined from: the run folder, the current folder and
    the folder of the catalogue the run scored (metrics.json's run.data), when that file exists.
    mistakes.csv of a run folder from someone else must not put any photo of this disk in the page."""
    root = run.path.resolve()
    roots = [root, Path.cwd().resolve()]
    data = run.info.get("run", {}).get("data")
    if isinstance(data, str) and data:
        catalogue = find_relative(root, Path(data))
        if catalogue is not None:
            roots.append(catalogue.resolve().parent)
    return roots


def find_relative(root: Path, path: Path) -> Path | None:
    """An existing file ``path``; a relative one is relative to the folder the run's command ran in,
    which the run does not record: it is looked for in the run folder, the folders above it
    (predict usually runs above its --out) and the current folder."""
    if path.is_absolute():
        return path if path.is_file() else None
    return next((base / path for base in (root, *root.parents, Path.cwd()) if (base / path).is_file()), None)


def photo_path(run: RunFolder, image: str) -> Path | None:
    """Where a mistake's photo is (see :func:`find_relative`), or None."""
    return find_relative(run.path.resolve(), Path(image))


def thumbnail_src(run: RunFolder, roots: list[Path], image: str) -> str:
    """The thumbnail of a mistake's photo, or a placeholder (logged) when it is missing, outside
    the folders ``roots`` (:func:`photo_roots`) or not an image. A photo named by URL is never
    fetched (the page stays offline and fetches nothing a shared run folder names)."""
    source = run.path / "mistakes.csv"
    if is_url(image):
        return placeholder("remote photo")
    path = photo_path(run, image) if image else None
    if path is None:
        log.warning("%s: photo %s not found; the report shows a placeholder", source, image)
        return placeholder("photo not found")
    target = path.resolve()
    if not any(target.is_relative_to(root) for root in roots):
        log.warning("%s: photo %s left out of the report: %s is outside the run folder, the current folder "
                    "and the catalogue's folder", source, image, target)
        return placeholder("photo outside the catalogue's folder")
    try:
        return thumbnail_data(target, THUMBNAIL)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:  # PIL's ways of refusing a file
        log.warning("%s: not shown in the report (%s)", path, err)
        return placeholder("not an image")


def _mistake_figure(run: RunFolder, roots: list[Path], row) -> str:
    probability = "?" if pd.isna(row.probability) else f"{row.probability:.2f}"
    caption = f"{html.escape(row.label)} &rarr; {html.escape(row.predicted)} ({probability})<br>id {html.escape(row.id)}"
    title = ""
    if is_url(row.image):  # a link to the photo, never fetched by the report
        url = html.escape(row.image)
        title = f' title="{url}"'
        caption += f'<br><a href="{url}" rel="noreferrer">remote photo</a>'
    return (f'<figure><img src="{thumbnail_src(run, roots, row.image)}" alt="product {html.escape(row.id)}"{title}>'
            f"<figcaption>{caption}</figcaption></figure>")


def test_split_html(run: RunFolder) -> str:
    """A trained run's test split as its own labeller labelled it (``test/``, written by
    finetune and probe): metrics, confusion matrices, risk-coverage and the mistakes gallery."""
    if run.kind not in ("finetune", "probe") or not (run.path / TEST_FOLDER / "metrics.json").is_file():
        return ""
    split = open_run(run.path / TEST_FOLDER)
    return (f"<h3>Test split, labelled by the run's labeller</h3>{table_html(headline(split))}"
            f"{plots_html(split)}{gallery_html(split)}")


def run_section(run: RunFolder) -> str:
    return (f'<section class="run"><h2>{html.escape(run.name)} <small>({run.kind})</small></h2>'
            f"<p>{html.escape(str(run.path))}</p><h3>Results</h3>{table_html(headline(run))}"
            f"<h3>Plots</h3>{plots_html(run)}{gallery_html(run)}{test_split_html(run)}</section>")


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
