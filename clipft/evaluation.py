"""Scoring a split during and after training: per attribute, a zero-shot classifier built from
the current text tower (bare labels or prompt ensembles, as the run's captions), and the
validation loss that picks the best epoch."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .losses import CaptionContrastiveLoss, caption_ids
from .metrics import check_labels, classification_metrics
from .prompts import PromptSpec
from .zeroshot import ZeroShotClassifier


@dataclass
class SplitTargets:
    """What one split is scored on: labelled rows per attribute, and the rows with a title."""

    rows: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    title_rows: np.ndarray
    titles: np.ndarray


def split_targets(frame, specs: list[PromptSpec], titles: list[str | None], rows: np.ndarray) -> SplitTargets:
    per_rows, per_labels = {}, {}
    for spec in specs:
        labels = frame[spec.column].to_numpy(dtype=object)[rows] if spec.column in frame.columns else np.array([None] * len(rows))
        known = check_labels(labels, spec.classes).known
        per_rows[spec.attribute] = rows[known]
        per_labels[spec.attribute] = labels[known].astype(str)
    with_title = np.array([titles[r] is not None for r in rows], dtype=bool)
    title_rows = rows[with_title]
    return SplitTargets(per_rows, per_labels, title_rows, np.array([titles[r] for r in title_rows], dtype=object))


def _embed(image_fn, rows: np.ndarray, batch_size: int) -> np.ndarray:
    chunks = [image_fn(rows[i : i + batch_size]).float().cpu().numpy() for i in range(0, len(rows), batch_size)]
    return np.concatenate(chunks) if chunks else np.zeros((0, 1), dtype=np.float32)


@torch.no_grad()
def evaluate(model, tokenizer, image_fn, specs: list[PromptSpec], targets: SplitTargets, captions: str,
             batch_size: int = 256, device="cpu", with_title_loss: bool = False) -> dict:
    """Per-attribute loss/accuracy/macro-F1 and, when asked, the title contrastive loss.

    ``loss`` is the mean of the losses of what the run trains: each attribute's cross-entropy
    of its images over all its classes, and for title runs the contrastive loss over fixed
    chunks of the split (the same loss as training, on batches that never change).
    """
    out: dict = {}
    losses = []
    for spec in specs:
        rows, labels = targets.rows[spec.attribute], targets.labels[spec.attribute]
        if not len(rows):
            continue
        clf = ZeroShotClassifier(model, tokenizer, spec.bare() if captions == "label" else spec,
                                 device=device, cache=False).fit()
        proba = clf.predict_proba(_embed(image_fn, rows, batch_size))
        index = {c: i for i, c in enumerate(clf.classes_)}
        target = np.array([index[v] for v in labels])
        loss = float(-np.log(proba[np.arange(len(target)), target].clip(min=1e-12)).mean())
        metrics = classification_metrics(labels, clf.classes_[proba.argmax(axis=1)])
        out[spec.attribute] = {"loss": loss, "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
                               "n": metrics["n"]}
        if captions != "title":
            losses.append(loss)
    if with_title_loss and len(targets.title_rows):
        loss_fn = CaptionContrastiveLoss()
        chunk_losses, sizes = [], []
        for start in range(0, len(targets.title_rows), batch_size):
            rows = targets.title_rows[start : start + batch_size]
            unique, ids = caption_ids(list(targets.titles[start : start + batch_size]))
            text = model.encode_text(tokenizer(unique).to(device))
            chunk_losses.append(loss_fn(image_fn(rows), text, ids.to(device), model.logit_scale.exp()).item())
            sizes.append(len(rows))
        out["title"] = {"loss": float(np.average(chunk_losses, weights=sizes)), "n": int(sum(sizes))}
        losses.append(out["title"]["loss"])
    out["loss"] = float(np.mean(losses)) if losses else float("nan")
    return out
