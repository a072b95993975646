"""Result files of a scoring run: predictions.csv, metrics.json, skipped.csv, confusion
matrices, and the summary table printed at the end."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .data import BadImage, Catalogue
from .fileio import atomic_write, write_json
from .metrics import check_labels, classification_metrics
from .plots import plot_confusion_matrix
from .prompts import PromptSpec
from .scoring import ScoredCatalogue

TOP_K = 3


def _top_k(proba: np.ndarray, classes, k: int = TOP_K) -> list[str]:
    order = np.argsort(-proba, axis=1)[:, :k]
    return [";".join(f"{classes[j]}:{row[j]:.3f}" for j in idx) for row, idx in zip(proba, order)]


def predictions_frame(scored: ScoredCatalogue) -> pd.DataFrame:
    """One row per scored product: its id, what it was scored on (image, title, image+title),
    then per attribute the predicted value, its
    probability and the top 3 as ``value:prob;value:prob;...``."""
    columns = {"id": [scored.catalogue.ids[r] for r in scored.rows], "scored_on": scored.scored_on}
    for spec in scored.specs:
        proba = scored.proba[spec.attribute]
        best = proba.argmax(axis=1) if len(proba) else np.zeros(0, dtype=int)
        columns[spec.attribute] = [spec.classes[j] for j in best]
        columns[f"{spec.attribute}_prob"] = np.round(proba[np.arange(len(best)), best], 4)
        columns[f"{spec.attribute}_top{TOP_K}"] = _top_k(proba, spec.classes)
    return pd.DataFrame(columns)


def labelled_specs(scored: ScoredCatalogue) -> list[PromptSpec]:
    """Attributes whose label column is in the catalogue; the others are annotation only."""
    return [spec for spec in scored.specs if spec.column in scored.catalogue.frame.columns]


def labelled_pairs(scored: ScoredCatalogue, predictions: pd.DataFrame, spec: PromptSpec):
    """(true labels, predictions, label check) over the scored rows whose label is a class."""
    labels = scored.catalogue.frame[spec.column].to_numpy()[scored.rows]
    check = check_labels(labels, spec.classes)
    return labels[check.known].astype(str), predictions[spec.attribute].to_numpy()[check.known], check


def attribute_metrics(scored: ScoredCatalogue, predictions: pd.DataFrame) -> dict:
    results = {}
    for spec in labelled_specs(scored):
        y_true, y_pred, check = labelled_pairs(scored, predictions, spec)
        counts = {
            "rows": len(scored.catalogue),
            "skipped_images": len(scored.skipped),
            "missing_labels": check.missing,
            "unknown_labels": sum(check.unknown.values()),
            "unknown_values": check.unknown,
        }
        if not len(y_true):
            results[spec.attribute] = {"column": spec.column, **counts, "n": 0}
            continue
        results[spec.attribute] = {"column": spec.column, **classification_metrics(y_true, y_pred), **counts}
    return results


def markdown_table(frame: pd.DataFrame, digits: int = 3) -> str:
    """A pandas frame as a GitHub markdown table (index included when it is named)."""
    if any(name is not None for name in frame.index.names):
        frame = frame.reset_index()
    if isinstance(frame.columns, pd.MultiIndex):
        frame.columns = [" ".join(str(c) for c in col if str(c)) for col in frame.columns]

    def cell(value) -> str:
        if isinstance(value, float):
            return "" if np.isnan(value) else f"{value:.{digits}f}"
        return str(value)

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def summary_table(metrics: dict) -> str:
    rows = [
        {
            "attribute": attribute,
            "n": m["n"],
            "accuracy": m.get("accuracy", float("nan")),
            "macro_f1": m.get("macro_f1", float("nan")),
            "balanced_acc": m.get("balanced_accuracy", float("nan")),
            "unknown_labels": m["unknown_labels"],
            "skipped_images": m["skipped_images"],
        }
        for attribute, m in metrics.items()
    ]
    return pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.3f}")


def write_skipped(catalogue: Catalogue, skipped: list[BadImage], path: str | Path) -> None:
    """skipped.csv: the rows left out because their photo was missing or unreadable (if any)."""
    if not skipped:
        return
    table = pd.DataFrame({
        "id": [catalogue.ids[b.row] for b in skipped],
        "line": [b.line for b in skipped],
        "path": [b.path for b in skipped],
        "reason": [b.reason for b in skipped],
    })
    with atomic_write(path) as f:
        table.to_csv(f, index=False)


def write_zeroshot_report(scored: ScoredCatalogue, out_dir: str | Path, run_info: dict) -> dict:
    """Write every result file into ``out_dir``; return the metrics (empty without labels)."""
    out = Path(out_dir)
    predictions = predictions_frame(scored)
    with atomic_write(out / "predictions.csv") as f:
        predictions.to_csv(f, index=False)
    write_skipped(scored.catalogue, scored.skipped, out / "skipped.csv")
    metrics = attribute_metrics(scored, predictions)
    if metrics:
        write_json(out / "metrics.json", {"run": run_info, "attributes": metrics})
        for spec in labelled_specs(scored):
            y_true, y_pred, _ = labelled_pairs(scored, predictions, spec)
            if len(y_true):
                plot_confusion_matrix(y_true, y_pred, spec.attribute, out / f"confusion_{spec.attribute}.png")
    return metrics
