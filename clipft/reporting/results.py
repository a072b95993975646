"""What a scoring run reports: predictions per product, metrics of the labelled attributes
(gathered chunk by chunk), and the rows it skipped."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from ..catalogue import BadImage, Catalogue
from ..fileio import atomic_write
from ..metrics import check_labels, classification_metrics
from ..prompts import PromptSpec
from ..zeroshot import ScoredCatalogue

TOP_K = 3


_THOUSANDTHS = np.array([f"{i / 1000:.3f}" for i in range(1001)], dtype=object)


def top_k(proba: np.ndarray, classes, k: int = TOP_K) -> list[str]:
    """Per row, ``value:prob;value:prob;...`` for the ``k`` likeliest classes (3 decimals)."""
    order = np.argsort(-proba, axis=1)[:, :k]
    names = np.asarray(classes, dtype=object)[order]
    # one formatted string per thousandth instead of one float format per cell: a million rows in seconds
    probs = _THOUSANDTHS[np.rint(np.take_along_axis(proba, order, axis=1) * 1000).astype(int)]
    cells = names + ":" + probs
    joined = cells[:, 0]
    for column in range(1, cells.shape[1]):
        joined = joined + ";" + cells[:, column]
    return joined.tolist()


def predictions_frame(scored: ScoredCatalogue) -> pd.DataFrame:
    """One row per scored product: its id, what it was scored on (image, title, image+title),
    then per attribute the predicted value, its
    probability and the top 3 as ``value:prob;value:prob;...``."""
    columns = {"id": np.asarray(scored.catalogue.ids, dtype=object)[scored.rows], "scored_on": scored.scored_on}
    for spec in scored.specs:
        proba = scored.proba[spec.attribute]
        best = proba.argmax(axis=1) if len(proba) else np.zeros(0, dtype=int)
        columns[spec.attribute] = np.asarray(spec.classes, dtype=object)[best]
        columns[f"{spec.attribute}_prob"] = np.round(proba[np.arange(len(best)), best], 4)
        columns[f"{spec.attribute}_top{TOP_K}"] = top_k(proba, spec.classes)
    return pd.DataFrame(columns)


def labelled_specs(scored: ScoredCatalogue) -> list[PromptSpec]:
    """Attributes whose label column is in the catalogue; the others are annotation only."""
    return [spec for spec in scored.specs if spec.column in scored.catalogue.frame.columns]


def labelled_pairs(scored: ScoredCatalogue, predictions: pd.DataFrame, spec: PromptSpec):
    """(true labels, predictions, label check) over the scored rows whose label is a class."""
    labels = scored.catalogue.frame[spec.column].to_numpy()[scored.rows]
    check = check_labels(labels, spec.classes)
    return labels[check.known].astype(str), predictions[spec.attribute].to_numpy()[check.known], check


def left_out_labels(missing: int, unknown: Counter) -> dict:
    """metrics.json's account of the labels a run could not score: blank ones, and values that
    are not classes of the prompt file, counted and named (commonest first)."""
    values = dict(unknown.most_common())
    return {"missing_labels": missing, "unknown_labels": sum(values.values()), "unknown_values": values}


def unknown_labels_message(attribute: str, unknown: dict, source: str, show: int = 8) -> str:
    """One line naming the label values of ``attribute`` that are not classes of ``source``."""
    listed = ", ".join(f"{value!r} x{count}" for value, count in list(unknown.items())[:show])
    return (f"{attribute}: {sum(unknown.values())} label(s) are not classes of {source}, left out of the metrics: "
            f"{listed}")


class ConfidentMistakes:
    """The most confident wrong predictions per attribute, kept (``keep`` of them) while a
    catalogue streams by: what a catalogue team looks at first (mistakes.csv, the report)."""

    COLUMNS = ["attribute", "id", "image", "label", "predicted", "probability"]

    def __init__(self, keep: int = 48):
        self.keep = keep
        self.frames: dict[str, pd.DataFrame] = {}

    def add(self, attribute: str, ids, catalogue, rows, labels, predicted, probability) -> None:
        """Labelled products of one chunk: their ids, ``rows`` of the chunk's ``catalogue``, true and
        predicted labels and the prediction's probability."""
        labels, predicted = np.asarray(labels, dtype=str), np.asarray(predicted, dtype=str)
        wrong = np.flatnonzero(labels != predicted)
        frame = pd.DataFrame({"attribute": attribute, "id": np.asarray(ids, dtype=object)[wrong],
                              "image": [catalogue.photo_reference(rows[i]) for i in wrong], "label": labels[wrong],
                              "predicted": predicted[wrong], "probability": np.asarray(probability)[wrong]})
        if attribute in self.frames:
            frame = pd.concat([self.frames[attribute], frame], ignore_index=True)
        self.frames[attribute] = frame.sort_values("probability", ascending=False, kind="stable").head(self.keep)

    def write(self, path: str | Path) -> None:
        """mistakes.csv: per attribute, the wrong labels the model was surest of, surest first."""
        frames = [f for f in self.frames.values() if len(f)]
        table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=self.COLUMNS)
        with atomic_write(path) as f:
            table.to_csv(f, index=False)


class LabelledResults:
    """True labels and predictions of the labelled attributes, gathered chunk by chunk of a
    catalogue, and the label counts that go with them; the metrics are computed once at the end."""

    def __init__(self):
        self.entries: dict[str, dict] = {}
        self.mistakes = ConfidentMistakes()

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
            rows = scored.rows[check.known]
            self.mistakes.add(spec.attribute, predictions["id"].to_numpy()[check.known], scored.catalogue,
                              rows, y_true, y_pred, predictions[f"{spec.attribute}_prob"].to_numpy()[check.known])

    def pairs(self, attribute: str) -> tuple[np.ndarray, np.ndarray]:
        entry = self.entries[attribute]
        return np.concatenate(entry["y_true"]), np.concatenate(entry["y_pred"])

    def metrics(self) -> dict:
        results = {}
        for attribute, entry in self.entries.items():
            y_true, y_pred = self.pairs(attribute)
            counts = {"rows": entry["rows"], "skipped_images": entry["skipped_images"],
                      **left_out_labels(entry["missing_labels"], entry["unknown_values"])}
            scores = classification_metrics(y_true, y_pred) if len(y_true) else {"n": 0}
            results[attribute] = {"column": entry["column"], **scores, **counts}
        return results


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


