"""What a scoring run reports: predictions per product with their status, metrics of the
labelled attributes (gathered chunk by chunk), the most confident mistakes, and the rows it
skipped."""
from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from ..catalogue import BadImage, Catalogue
from ..fileio import atomic_write
from ..metrics import check_labels, classification_metrics
from ..multilabel import check_multi_labels, choose_values, multilabel_metrics
from ..scoring import ScoredChunk

log = logging.getLogger(__name__)

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


def predictions_frame(chunk: ScoredChunk, heads: dict) -> pd.DataFrame:
    """One row per scored product: its id, what it was scored on (image, title, image+title),
    then per attribute the predicted value, its calibrated probability, the top 3 as
    ``value:prob;value:prob;...`` and its status (:func:`label_status`); where the attribute does
    not apply the value is empty and the status n/a."""
    columns = {"id": np.asarray(chunk.catalogue.ids, dtype=object)[chunk.rows], "scored_on": chunk.scored_on}
    for name, head in heads.items():
        proba, applying = chunk.proba[name], chunk.applies[name]
        best = proba.argmax(axis=1) if len(proba) else np.zeros(0, dtype=int)
        confidence = proba[np.arange(len(best)), best]
        columns[name] = np.where(applying, predicted_values(head, proba, best), "")
        columns[f"{name}_prob"] = np.where(applying, np.round(confidence, 4), np.nan)
        columns[f"{name}_top{TOP_K}"] = np.where(applying, np.asarray(top_k(proba, head.classes), dtype=object), "")
        columns[f"{name}_status"] = label_status(head, columns[name], confidence, applying)
        if head.spec.taxonomy is not None:
            columns |= ancestor_columns(name, head, columns[name], proba, applying)
    return pd.DataFrame(columns)


def ancestor_columns(name: str, head, leaves: np.ndarray, proba: np.ndarray, applying: np.ndarray) -> dict:
    """A tree attribute's predicted path: per level of its taxonomy, ``<attribute>_<level>`` (the
    chosen leaf's ancestor, so the path is always consistent) and its probability."""
    columns = {}
    for (level, _), (values, probability) in zip(head.spec.taxonomy.levels,
                                                 head.spec.taxonomy.ancestors(leaves, head.classes, proba)):
        columns[f"{name}_{level}"] = np.where(applying, values, "")
        columns[f"{name}_{level}_prob"] = np.where(applying, np.round(probability, 4), np.nan)
    return columns


def predicted_values(head, proba: np.ndarray, best: np.ndarray) -> np.ndarray:
    """The best class; for a multi-valued attribute, every class at or above its own threshold
    (:func:`clipft.multilabel.choose_values`), joined by the prompt file's separator."""
    if not head.spec.multi:
        return head.classes[best]
    return choose_values(proba, head.classes, head.spec.separator, head.calibration.class_thresholds)


def label_status(head, values: np.ndarray, confidence: np.ndarray, applying: np.ndarray) -> np.ndarray:
    """auto where the confidence reaches the head's threshold, review elsewhere and wherever the
    label is the 'none of these' class (a person names the value) or holds several values (the
    threshold guarantees the best value alone), n/a where the attribute does not apply."""
    values = np.asarray(values, dtype=object)
    several = np.array([head.spec.separator in str(v) for v in values], dtype=bool) if head.spec.multi else False
    auto = (confidence >= head.calibration.threshold) & (values != head.spec.other) & ~several
    return np.where(applying, np.where(auto, "auto", "review"), "n/a")


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


def known_labels(spec, labels: np.ndarray, applying: np.ndarray):
    """(labels, check) of one chunk: where the attribute applies, which labels can be scored
    (every value a class); a multi-valued attribute's labels in canonical order."""
    if spec.multi:
        canonical, check = check_multi_labels(labels[applying], spec.classes, spec.separator)
        labels = labels.copy()
        labels[applying] = canonical
    else:
        check = check_labels(labels[applying], spec.classes)  # where it is n/a, no label counts
    return labels, check


class LabelledResults:
    """True labels, predictions, confidences and statuses of the attributes the catalogue has
    labels for, gathered chunk by chunk, with the labels left out (blank, or not a class); the
    metrics are computed once at the end."""

    def __init__(self, heads: dict, calibrated: bool):
        self.heads, self.calibrated = heads, calibrated
        self.entries: dict[str, dict] = {}
        self.mistakes = ConfidentMistakes()

    def add(self, chunk: ScoredChunk, predictions: pd.DataFrame) -> None:
        for name, head in self.heads.items():
            if head.spec.column not in chunk.catalogue.frame.columns:
                continue  # annotation only: nothing to score against
            labels = head.spec.catalogue_labels(chunk.catalogue.frame[head.spec.column].to_numpy(dtype=object)[chunk.rows])
            applying = chunk.applies[name]
            labels, check = known_labels(head.spec, labels, applying)
            known = np.zeros(len(labels), dtype=bool)
            known[np.flatnonzero(applying)[check.known]] = True
            entry = self.entries.setdefault(name, {"y": [], "pred": [], "conf": [], "auto": [], "rows": 0,
                                                   "skipped_images": 0, "missing": 0, "unknown": Counter(),
                                                   "not_applicable": 0})
            entry["not_applicable"] += int((~applying).sum())
            if head.spec.taxonomy is not None:
                self._add_levels(entry, name, head, chunk, predictions, applying)
            entry["y"].append(labels[known].astype(str))
            entry["pred"].append(predictions[name].to_numpy()[known].astype(str))
            entry["conf"].append(predictions[f"{name}_prob"].to_numpy()[known])
            entry["auto"].append(predictions[f"{name}_status"].to_numpy()[known] == "auto")
            entry["rows"] += len(chunk.catalogue)
            entry["skipped_images"] += len(chunk.skipped)
            entry["missing"] += check.missing
            entry["unknown"].update(check.unknown)
            self.mistakes.add(name, predictions["id"].to_numpy()[known], chunk.catalogue, chunk.rows[known],
                              entry["y"][-1], entry["pred"][-1], entry["conf"][-1])

    def scores(self, name: str, arrays: dict[str, np.ndarray]) -> dict:
        """The classification metrics of one attribute (scikit-learn's multi-label ones for a
        multi-valued attribute)."""
        spec = self.heads[name].spec
        if not len(arrays["y"]):
            return {"n": 0}
        if spec.multi:
            return multilabel_metrics(arrays["y"], arrays["pred"], spec.classes, spec.separator)
        return classification_metrics(arrays["y"], arrays["pred"])

    @staticmethod
    def _add_levels(entry: dict, name: str, head, chunk: ScoredChunk, predictions: pd.DataFrame, applying) -> None:
        """A tree attribute's ancestors against the catalogue's own columns for them, where given."""
        frame = chunk.catalogue.frame
        for level, column in head.spec.taxonomy.levels:
            if column not in frame.columns:
                continue
            truth = frame[column].to_numpy(dtype=object)[chunk.rows]
            given = applying & ~pd.isna(truth)
            pairs = entry.setdefault("levels", {}).setdefault(level, {"y": [], "pred": []})
            pairs["y"].append(truth[given].astype(str))
            pairs["pred"].append(predictions[f"{name}_{level}"].to_numpy()[given].astype(str))

    def arrays(self, name: str) -> dict[str, np.ndarray]:
        """y (true), pred, conf and auto of one attribute, every chunk together."""
        entry = self.entries[name]
        return {key: np.concatenate(entry[key]) for key in ("y", "pred", "conf", "auto")}

    def pairs(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        arrays = self.arrays(name)
        return arrays["y"], arrays["pred"]

    def metrics(self) -> dict:
        """Per attribute: the classification metrics, the labels left out (values that are not
        classes are also logged as a warning) and, for a calibrated labeller, coverage (share
        auto-labelled), accuracy of the auto-labelled part, threshold and target precision."""
        out = {}
        for name, entry in self.entries.items():
            arrays, head = self.arrays(name), self.heads[name]
            left_out = left_out_labels(entry["missing"], entry["unknown"])
            if left_out["unknown_values"]:
                log.warning(unknown_labels_message(name, left_out["unknown_values"], head.spec.source))
            scores = self.scores(name, arrays)
            out[name] = {"column": head.spec.column, **scores, "rows": entry["rows"],
                         "skipped_images": entry["skipped_images"], "not_applicable": entry["not_applicable"],
                         **left_out}
            if head.spec.other is not None:
                out[name]["other"] = other_metrics(arrays, head.spec.other)
            if entry.get("levels"):
                out[name]["levels"] = level_metrics(entry["levels"])
            if self.calibrated:
                out[name] |= review_metrics(arrays, head.calibration)
        return out


def level_metrics(levels: dict) -> dict:
    """Per ancestor level of a tree attribute: products with the level's value given, and how
    many of their predicted ancestors match it."""
    out = {}
    for level, pairs in levels.items():
        y, pred = np.concatenate(pairs["y"]), np.concatenate(pairs["pred"])
        out[level] = {"n": int(len(y)), "accuracy": float((y == pred).mean()) if len(y) else None}
    return out


def other_metrics(arrays: dict[str, np.ndarray], other: str) -> dict:
    """How the 'none of these' class did: out-of-list products caught, in-list ones sent to it."""
    outside, called = arrays["y"] == other, arrays["pred"] == other
    return {"out_of_list": int(outside.sum()), "caught": int((outside & called).sum()),
            "caught_share": float((outside & called).sum() / outside.sum()) if outside.any() else None,
            "in_list": int((~outside).sum()), "in_list_called_other": int((~outside & called).sum()),
            "in_list_called_other_share": float((~outside & called).sum() / (~outside).sum())
            if (~outside).any() else None,
            "auto_out_of_list": int((outside & arrays["auto"]).sum())}


def review_metrics(arrays: dict[str, np.ndarray], calibration) -> dict:
    """How much was auto-labelled, and how accurately, at the calibrated threshold."""
    correct, auto = arrays["y"] == arrays["pred"], arrays["auto"]
    return {"coverage": float(auto.mean()) if len(auto) else None,
            "auto_accuracy": float(correct[auto].mean()) if auto.any() else None,
            "threshold": calibration.to_dict()["threshold"], "target_precision": calibration.target_precision,
            "guarantee": calibration.guarantee}


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


