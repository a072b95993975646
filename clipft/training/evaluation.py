"""Scoring a split during and after training: per attribute, a zero-shot classifier built from
the current text tower (bare labels or prompt ensembles, as the run's captions), and the
validation loss that picks the best epoch."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.special import softmax
from sklearn.metrics import log_loss

from ..applicability import training_labels
from ..calibration import fit_temperature
from ..fusion import WEIGHT_GRID, ProductFeatures, batched_parts, combine
from ..losses import CaptionContrastiveLoss, caption_ids
from ..metrics import check_labels, classification_metrics
from ..multilabel import check_multi_labels, expand
from ..prompts import PromptSpec
from ..zeroshot import ZeroShotClassifier


@dataclass
class SplitTargets:
    """What one split is scored on: labelled rows per attribute, and the rows with a title."""

    rows: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    title_rows: np.ndarray
    titles: np.ndarray
    full_labels: dict[str, np.ndarray] = field(default_factory=dict)  # multi-valued: each row's whole label


def split_targets(frame, specs: list[PromptSpec], titles: list[str | None], rows: np.ndarray) -> SplitTargets:
    """Per attribute, the split's labelled rows and labels; a multi-valued attribute has a row
    per (product, value), its whole label in ``full_labels``."""
    per_rows, per_labels, full = {}, {}, {}
    for spec in specs:
        labels = training_labels(spec, specs, frame)[rows]  # out-of-list values as 'other'; none where n/a
        if spec.multi:
            canonical, check = check_multi_labels(labels, spec.classes, spec.separator)
            per_rows[spec.attribute], values, full[spec.attribute] = expand(rows[check.known], canonical[check.known],
                                                                            spec.separator)
            per_labels[spec.attribute] = values.astype(str)
            continue
        known = check_labels(labels, spec.classes).known
        per_rows[spec.attribute] = rows[known]
        per_labels[spec.attribute] = labels[known].astype(str)
    with_title = np.array([titles[r] is not None for r in rows], dtype=bool)
    title_rows = rows[with_title]
    return SplitTargets(per_rows, per_labels, title_rows, np.array([titles[r] for r in title_rows], dtype=object),
                        full)


def _classifier(model, text_fn, spec: PromptSpec, captions: str, priors: dict | None) -> ZeroShotClassifier:
    """The attribute's classifier from the current text tower: its classes captioned as the run
    trains them (bare labels or prompt ensembles), plus the log prior ``priors`` gives it."""
    return ZeroShotClassifier(model, None, spec.bare() if captions == "label" else spec, text_fn=text_fn,
                              log_prior=(priors or {}).get(spec.attribute)).fit()


def _scores(clf: ZeroShotClassifier, embeddings: torch.Tensor, labels: np.ndarray, calibrated: bool) -> dict:
    logits = clf.decision_function(embeddings.numpy())
    index = {c: i for i, c in enumerate(clf.classes_)}
    target = np.array([index[v] for v in labels])
    temperature = fit_temperature(logits, target) if calibrated else 1.0
    loss = float(log_loss(target, softmax(logits / temperature, axis=1), labels=np.arange(len(clf.classes_))))
    metrics = classification_metrics(labels, clf.classes_[logits.argmax(axis=1)])
    return {"loss": loss, "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"], "n": metrics["n"]}


def _title_loss(model, features: ProductFeatures, text_fn, targets: SplitTargets, batch_size: int) -> dict:
    """The training loss of title runs over fixed chunks of the split (batches that never change)."""
    loss_fn = CaptionContrastiveLoss()
    chunk_losses, sizes = [], []
    for start in range(0, len(targets.title_rows), batch_size):
        rows = targets.title_rows[start : start + batch_size]
        unique, ids = caption_ids(list(targets.titles[start : start + batch_size]))
        logit_scale = model.logit_scale.exp()
        chunk_losses.append(loss_fn(features(rows), text_fn(unique), ids.to(logit_scale.device), logit_scale).item())
        sizes.append(len(rows))
    return {"loss": float(np.average(chunk_losses, weights=sizes)), "n": int(sum(sizes))}


@torch.no_grad()
def evaluate(model, features: ProductFeatures, text_fn, specs: list[PromptSpec], targets: SplitTargets,
             captions: str, batch_size: int = 256, with_title_loss: bool = False,
             weights: dict[str, float] | None = None, tune_weights: bool = False,
             priors: dict[str, np.ndarray] | None = None, calibrated: bool = False) -> dict:
    """Per-attribute loss/accuracy/macro-F1 and, when asked, the title contrastive loss.

    ``loss`` is the mean of the losses of what the run trains: each attribute's cross-entropy
    of its products over all its classes, and for title runs the contrastive loss over fixed
    chunks of the split (the same loss as training, on batches that never change).

    Fusion models use ``features.weight``, or per attribute ``weights[attribute]``; with
    ``tune_weights`` each attribute takes the weight of :data:`WEIGHT_GRID` with the best
    accuracy here (and reports it as ``weight``), which is how validation picks it.
    ``priors[attribute]``: the log class prior a fine-tuned model's scores add (see
    :class:`clipft.zeroshot.ZeroShotClassifier`). ``calibrated``: each attribute's loss after
    the temperature scaling that fits it best (as a labeller is calibrated on validation), so
    that an epoch is not judged by how over-confident it has grown but by how well it ranks
    the classes; accuracy and macro-F1 do not depend on it.
    """
    out: dict = {}
    losses = []
    for spec in specs:
        rows, labels = targets.rows[spec.attribute], targets.labels[spec.attribute]
        if not len(rows):
            continue
        clf = _classifier(model, text_fn, spec, captions, priors)
        parts = batched_parts(features, rows, batch_size)
        if features.inputs != "fusion":
            candidates = [features.weight]
        else:
            candidates = WEIGHT_GRID if tune_weights else [(weights or {}).get(spec.attribute, features.weight)]
        scored = [(w, _scores(clf, combine(parts, features.inputs, w), labels, calibrated)) for w in candidates]
        weight, result = max(scored, key=lambda item: item[1]["accuracy"])  # first best: the lowest weight
        out[spec.attribute] = result | ({"weight": weight} if features.inputs == "fusion" else {})
        if captions != "title":
            losses.append(result["loss"])
    if with_title_loss and len(targets.title_rows):
        out["title"] = _title_loss(model, features, text_fn, targets, batch_size)
        losses.append(out["title"]["loss"])
    out["loss"] = float(np.mean(losses)) if losses else float("nan")
    return out


@torch.no_grad()
def attribute_logits(model, features: ProductFeatures, text_fn, spec: PromptSpec, rows: np.ndarray, captions: str,
                     batch_size: int = 256, weight: float | None = None, priors: dict | None = None) -> np.ndarray:
    """The current model's zero-shot scores (n, classes in the prompt file's order) of catalogue
    ``rows`` for one attribute, as :func:`evaluate` scores them (fusion at ``weight``, by default
    the features' own)."""
    clf = _classifier(model, text_fn, spec, captions, priors)
    parts = batched_parts(features, rows, batch_size)
    return clf.decision_function(combine(parts, features.inputs, features.weight if weight is None else weight).numpy())


def tuned_title_weights(model, features: ProductFeatures, text_fn, specs: list[PromptSpec], val: SplitTargets,
                        captions: str, batch_size: int = 256, priors: dict | None = None) -> dict[str, float]:
    """Per attribute, the fusion title weight of :data:`WEIGHT_GRID` most accurate on
    validation (empty unless the features fuse photo and title)."""
    if features.inputs != "fusion":
        return {}
    scored = evaluate(model, features, text_fn, specs, val, captions, batch_size, tune_weights=True, priors=priors)
    return {s.attribute: scored[s.attribute]["weight"] for s in specs if s.attribute in scored}
