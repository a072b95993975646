"""Result files of a scoring run: predictions.csv, metrics.json, skipped.csv, confusion
matrices, and the summary table printed at the end."""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

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


class LabelledResults:
    """True labels and predictions of the labelled attributes, gathered chunk by chunk of a
    catalogue, and the label counts that go with them; the metrics are computed once at the end."""

    def __init__(self):
        self.entries: dict[str, dict] = {}

    def add(self, scored: ScoredCatalogue, predictions: pd.DataFrame) -> None:
        for spec in labelled_specs(scored):
            y_true, y_pred, check = labelled_pairs(scored, predictions, spec)
            entry = self.entries.setdefault(spec.attribute, {
                "column": spec.column, "y_true": [], "y_pred": [], "rows": 0, "skipped_images": 0,
                "missing_labels": 0, "unknown_values": Counter()})
            entry["y_true"].append(y_true)
            entry["y_pred"].append(y_pred)
            entry["rows"] += len(scored.catalogue)
            entry["skipped_images"] += len(scored.skipped)
            entry["missing_labels"] += check.missing
            entry["unknown_values"].update(check.unknown)

    def pairs(self, attribute: str) -> tuple[np.ndarray, np.ndarray]:
        entry = self.entries[attribute]
        return np.concatenate(entry["y_true"]), np.concatenate(entry["y_pred"])

    def metrics(self) -> dict:
        results = {}
        for attribute, entry in self.entries.items():
            y_true, y_pred = self.pairs(attribute)
            unknown = dict(entry["unknown_values"].most_common())
            counts = {"rows": entry["rows"], "skipped_images": entry["skipped_images"],
                      "missing_labels": entry["missing_labels"], "unknown_labels": sum(unknown.values()),
                      "unknown_values": unknown}
            scores = classification_metrics(y_true, y_pred) if len(y_true) else {"n": 0}
            results[attribute] = {"column": entry["column"], **scores, **counts}
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


def skipped_frame(catalogue: Catalogue, skipped: list[BadImage]) -> pd.DataFrame:
    """The rows left out because their photo was missing or unreadable, with the reason."""
    return pd.DataFrame({
        "id": [catalogue.ids[b.row] for b in skipped],
        "line": [b.line for b in skipped],
        "path": [b.path for b in skipped],
        "reason": [b.reason for b in skipped],
    })


def write_skipped(catalogue: Catalogue, skipped: list[BadImage], path: str | Path) -> None:
    """skipped.csv (only when rows were skipped)."""
    if skipped:
        with atomic_write(path) as f:
            skipped_frame(catalogue, skipped).to_csv(f, index=False)


@dataclass
class ReportTotals:
    rows: int = 0  # catalogue rows read
    scored: int = 0
    skipped: int = 0
    encoded: int = 0  # images computed (the rest came from the cache)
    metrics: dict = field(default_factory=dict)


def write_zeroshot_report(chunks: Iterable[ScoredCatalogue], out_dir: str | Path, run_info: dict,
                          started: float | None = None) -> ReportTotals:
    """Write every result file into ``out_dir`` from scored chunks of a catalogue (one chunk
    for a catalogue that fits in memory). Predictions are written as each chunk arrives, into
    a file that replaces predictions.csv only when all chunks are done. ``started``
    (``time.perf_counter()`` at the start of the run) adds the run's seconds to metrics.json."""
    out = Path(out_dir)
    totals = ReportTotals()
    results = LabelledResults()
    skipped = []
    with atomic_write(out / "predictions.csv") as f:
        for scored in chunks:
            predictions = predictions_frame(scored)
            predictions.to_csv(f, index=False, header=totals.rows == 0)
            results.add(scored, predictions)
            if scored.skipped:
                skipped.append(skipped_frame(scored.catalogue, scored.skipped))
            totals.rows += len(scored.catalogue)
            totals.scored += len(scored.rows)
            totals.skipped += len(scored.skipped)
            totals.encoded += scored.encoded
    if totals.skipped:
        with atomic_write(out / "skipped.csv") as f:
            pd.concat(skipped, ignore_index=True).to_csv(f, index=False)
    totals.metrics = results.metrics()
    if totals.metrics:
        seconds = {"seconds": round(time.perf_counter() - started, 2)} if started is not None else {}
        write_json(out / "metrics.json", {"run": run_info | seconds, "attributes": totals.metrics})
        for attribute in totals.metrics:
            y_true, y_pred = results.pairs(attribute)
            if len(y_true):
                plot_confusion_matrix(y_true, y_pred, attribute, out / f"confusion_{attribute}.png")
    return totals
