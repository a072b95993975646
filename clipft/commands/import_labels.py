"""``clipft import-labels``: the labels people gave in Label Studio, applied to the catalogue.

A Label Studio JSON export is a list of tasks; each keeps the ``data`` it was imported with
(clipft's review tasks carry the product ``id``) and its ``annotations``, whose ``choices``
results are named after catalogue columns (``from_name``). The latest annotation of a task wins;
cancelled ones are ignored."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..catalogue import CatalogueError, read_catalogue_frame
from ..fileio import atomic_write, prepare_output_dir


def label_studio_labels(export: str | Path) -> list[tuple[str, str, str]]:
    """(product id, column, value) for every choice in the export's latest annotations."""
    try:
        tasks = json.loads(Path(export).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CatalogueError(f"{export}: not a readable Label Studio JSON export ({err})") from None
    if not isinstance(tasks, list):
        raise CatalogueError(f"{export}: expected a list of tasks (Label Studio's JSON export)")
    labels = []
    for number, task in enumerate(tasks, start=1):
        product = (task.get("data") or {}).get("id")
        annotations = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
        if product is None:
            raise CatalogueError(f"{export}: task {number} has no data.id (was it made by clipft predict?)")
        if annotations:
            latest = max(annotations, key=lambda a: a.get("updated_at") or a.get("created_at") or "")
            labels += [(str(product), r["from_name"], r["value"]["choices"][0]) for r in latest.get("result", [])
                       if r.get("type") == "choices" and r.get("value", {}).get("choices")]
    return labels


def apply_label_studio_export(export, data, out, id_column: str = "id") -> pd.DataFrame:
    """Write the catalogue with the exported labels applied to ``out`` and the list of changes
    beside it (``<out>.changes.csv``); returns the changes."""
    prepare_output_dir(Path(out).parent, (Path(out).name, f"{Path(out).name}.changes.csv"))
    frame = read_catalogue_frame(Path(data)).reset_index(drop=True)
    if id_column not in frame.columns:
        raise CatalogueError(f"{data}: no id column '{id_column}'")
    position = {v: i for i, v in enumerate(frame[id_column])}
    changes = []
    for product, column, value in label_studio_labels(export):
        if column not in frame.columns:
            raise CatalogueError(f"{export}: labels for column '{column}', which {data} does not have")
        if product not in position:
            raise CatalogueError(f"{export}: product {product} is not in {data}")
        row = position[product]
        if frame.at[row, column] != value:
            changes.append({"id": product, "column": column, "before": frame.at[row, column], "after": value})
            frame.at[row, column] = value
    with atomic_write(out) as f:
        frame.to_csv(f, index=False)
    changes = pd.DataFrame(changes, columns=["id", "column", "before", "after"])
    with atomic_write(f"{out}.changes.csv") as f:
        changes.to_csv(f, index=False)
    return changes
