"""What ``clipft predict`` writes: predictions with a status (auto-accepted or sent to a person),
the review queue, its Label Studio import file, and, on labelled catalogues, how many labels
were auto-accepted and how accurate they were (a risk-coverage curve per attribute)."""
from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np
import pandas as pd

from ..calibration import risk_coverage
from ..catalogue import Catalogue
from ..fileio import atomic_write, write_json
from ..metrics import check_labels
from ..photo_download import is_url
from .plots import save_figure, subplots
from .results import ConfidentMistakes, left_out_labels, top_k, unknown_labels_message

log = logging.getLogger(__name__)


def predicted_frame(catalogue: Catalogue, rows: np.ndarray, proba: dict, heads: dict) -> pd.DataFrame:
    """id, then per attribute: value, calibrated probability, top 3, and status auto / review."""
    columns = {"id": [catalogue.ids[r] for r in rows]}
    for name, p in proba.items():
        head = heads[name]
        best = p.argmax(axis=1)
        confidence = p[np.arange(len(best)), best]
        columns[name] = head.classes[best]
        columns[f"{name}_prob"] = np.round(confidence, 4)
        columns[f"{name}_top3"] = top_k(p, head.classes)
        columns[f"{name}_status"] = np.where(confidence >= head.calibration.threshold, "auto", "review")
    return pd.DataFrame(columns)


def review_frame(catalogue: Catalogue, rows: np.ndarray, predicted: pd.DataFrame, heads: dict) -> pd.DataFrame:
    """One row per (product, attribute) sent to review: id, image, title, attribute, the
    predicted value, its probability and top 3."""
    titles, parts = catalogue.titles(), []
    for name, head in heads.items():
        mine = np.flatnonzero(predicted[f"{name}_status"].to_numpy() == "review")
        parts.append(pd.DataFrame({
            "id": predicted["id"].to_numpy()[mine], "image": [catalogue.image_name(rows[i]) for i in mine],
            "title": [titles[rows[i]] for i in mine], "attribute": name, "column": head.spec.column,
            "predicted": predicted[name].to_numpy()[mine], "probability": predicted[f"{name}_prob"].to_numpy()[mine],
            "top3": predicted[f"{name}_top3"].to_numpy()[mine]}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


class ReviewResults:
    """True labels, predictions, confidences and statuses of the labelled attributes, gathered
    chunk by chunk, and the labels left out of them (blank, or not a class the run knows)."""

    def __init__(self, heads: dict):
        self.heads = heads
        self.entries: dict[str, dict[str, list]] = {}
        self.missing_labels: Counter = Counter()  # attribute -> blank labels
        self.unknown_values: dict[str, Counter] = {}  # attribute -> label values that are not its classes
        self.mistakes = ConfidentMistakes()

    def add(self, catalogue: Catalogue, rows: np.ndarray, predicted: pd.DataFrame) -> None:
        for name, head in self.heads.items():
            if head.spec.column not in catalogue.frame.columns:
                continue
            labels = catalogue.frame[head.spec.column].to_numpy(dtype=object)[rows]
            check = check_labels(labels, head.spec.classes)
            known = check.known
            self.missing_labels[name] += check.missing
            self.unknown_values.setdefault(name, Counter()).update(check.unknown)
            entry = self.entries.setdefault(name, {"y": [], "pred": [], "conf": [], "auto": []})
            entry["y"].append(labels[known].astype(str))
            entry["pred"].append(predicted[name].to_numpy()[known].astype(str))
            entry["conf"].append(predicted[f"{name}_prob"].to_numpy()[known])
            entry["auto"].append(predicted[f"{name}_status"].to_numpy()[known] == "auto")
            self.mistakes.add(name, predicted["id"].to_numpy()[known], catalogue, rows[known],
                              entry["y"][-1], entry["pred"][-1], entry["conf"][-1])

    def arrays(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        entry = {k: np.concatenate(v) for k, v in self.entries[name].items()}
        return entry["y"] == entry["pred"], entry["conf"], entry["auto"]

    def metrics(self) -> dict:
        """Per attribute: coverage (share auto-labelled), accuracy of the auto-labelled part,
        accuracy overall, the threshold, the target precision and the labels left out (label
        values the run never saw are also logged as a warning)."""
        out = {}
        for name in self.entries:
            correct, _, auto = self.arrays(name)
            calibration = self.heads[name].calibration
            left_out = left_out_labels(self.missing_labels[name], self.unknown_values[name])
            if left_out["unknown_values"]:
                log.warning(unknown_labels_message(name, left_out["unknown_values"], self.heads[name].spec.source))
            out[name] = {"n": int(len(correct)), "accuracy": float(correct.mean()) if len(correct) else None,
                         "coverage": float(auto.mean()) if len(auto) else None,
                         "auto_accuracy": float(correct[auto].mean()) if auto.any() else None,
                         "threshold": calibration.to_dict()["threshold"], "target_precision": calibration.target_precision,
                         **left_out}
        return out

    def plot(self, path: Path) -> None:
        """Accuracy of the auto-labelled part against coverage, per attribute, with each
        attribute's operating point."""
        fig, ax = subplots(figsize=(6.5, 4.5))
        for name in self.entries:
            correct, confidence, auto = self.arrays(name)
            coverage, accuracy = risk_coverage(confidence, correct)
            line, = ax.plot(coverage, accuracy, label=name)
            if auto.any():
                ax.plot([auto.mean()], [correct[auto].mean()], "o", color=line.get_color())
        ax.set(xlabel="coverage (share of products auto-labelled)", ylabel="accuracy of the auto-labelled part",
               title="Risk-coverage (dots: the chosen thresholds)", ylim=(0, 1.01), xlim=(0, 1))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        save_figure(fig, path)


def task_image(image: str, image_url_prefix: str) -> str:
    """A photo as a Label Studio task names it: a URL as it is, a path behind the prefix."""
    return image if is_url(image) else image_url_prefix + image


def label_studio_tasks(review: pd.DataFrame, model_version: str, image_url_prefix: str = "") -> list[dict]:
    """The review queue as Label Studio tasks, one per product: the photo, the title, and the
    model's pre-annotation of each attribute sent to review (a ``choices`` result per column)."""
    tasks = []
    for product, group in review.groupby("id", sort=False):
        first = group.iloc[0]
        results = [{"from_name": row.column, "to_name": "image", "type": "choices",
                    "value": {"choices": [row.predicted]}} for row in group.itertuples()]
        tasks.append({"data": {"id": str(product), "image": task_image(str(first["image"]), image_url_prefix),
                               "title": "" if first["title"] is None or pd.isna(first["title"]) else str(first["title"])},
                      "predictions": [{"model_version": model_version, "score": float(group["probability"].min()),
                                       "result": results}]})
    return tasks


def label_studio_config(heads: dict) -> str:
    """Label Studio labelling interface: the photo, the title, and one single-choice question per attribute."""
    blocks = ['<View>', '  <Image name="image" value="$image"/>', '  <Text name="title" value="$title"/>']
    for head in heads.values():
        # quoteattr: class and column names are any text ("Black & White", quotes)
        blocks.append(f'  <Header value={quoteattr(head.spec.attribute)}/>')
        blocks.append(f'  <Choices name={quoteattr(head.spec.column)} toName="image" choice="single" showInline="true">')
        blocks += [f'    <Choice value={quoteattr(c)}/>' for c in head.spec.classes]
        blocks.append('  </Choices>')
    return "\n".join(blocks + ['</View>']) + "\n"


def write_review_outputs(out: Path, review: pd.DataFrame, heads: dict, model_version: str, image_url_prefix: str) -> None:
    review = review.sort_values("probability", kind="stable").reset_index(drop=True) if len(review) else review
    with atomic_write(out / "review.csv") as f:
        review.to_csv(f, index=False)
    write_json(out / "review_labelstudio.json", label_studio_tasks(review, model_version, image_url_prefix)
               if len(review) else [])
    with atomic_write(out / "labelstudio_config.xml") as f:
        f.write(label_studio_config(heads))
