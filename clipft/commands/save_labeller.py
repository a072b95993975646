"""Make a finished run a labeller (:mod:`clipft.labeller`): calibrate each attribute's head on
the run's validation split and write labeller.json, the weights, classifiers and calibration data."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save as safetensors_bytes

from ..calibration import Calibration, calibrate
from ..fileio import atomic_write, write_json
from ..fusion import ProductFeatures, batched_parts
from ..labeller import CALIBRATION_FILE, FORMAT, LABELLER_FILE, WEIGHTS_FILE, Head, head_logits, spec_to_dict
from ..training.evaluation import SplitTargets

DEFAULT_TARGET_PRECISION = 0.95


@torch.no_grad()
def validation_logits(model, text_fn, head: Head, features: ProductFeatures, inputs: str, val: SplitTargets,
                      batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(logits, true class index) of the validation rows whose label is one of the head's classes."""
    rows, labels = val.rows[head.spec.attribute], val.labels[head.spec.attribute]
    index = {c: i for i, c in enumerate(head.classes)}
    known = np.array([label in index for label in labels], dtype=bool)
    rows, labels = rows[known], labels[known]
    if not len(rows):
        return np.zeros((0, len(index)), dtype=np.float32), np.zeros(0, dtype=int)
    clf = head.prompt_classifier(model, text_fn) if head.classifier is None else None
    logits = head_logits(head, batched_parts(features, rows, batch_size), inputs, clf)
    return logits.astype(np.float32), np.array([index[label] for label in labels])


def _classifier_file(out: Path, attribute: str, head: Head) -> dict | None:
    if head.classifier is None:
        return None
    import skops.io as sio

    name = f"classifier-{attribute}.skops"
    with atomic_write(out / name, "wb") as f:
        f.write(sio.dumps(head.classifier))
    return {"kind": type(head.classifier).__name__, "file": name}


def save_labeller(out: Path, kind: str, model, text_fn, heads: dict[str, Head], features: ProductFeatures,
                  val: SplitTargets, batch_size: int, info: dict,
                  target_precision: float = DEFAULT_TARGET_PRECISION) -> dict[str, Calibration]:
    """Calibrate every head on ``val`` and write the labeller files into the run folder ``out``.
    ``info`` adds model, title_column and reproduces to labeller.json."""
    arrays, attributes = {}, {}
    for name, head in heads.items():
        logits, y = validation_logits(model, text_fn, head, features, features.inputs, val, batch_size)
        head.calibration = calibrate(logits, y, target_precision) if len(y) else Calibration(target_precision=target_precision)
        arrays[f"{name}.logits"], arrays[f"{name}.y"] = logits, y
        attributes[name] = {"prompts": spec_to_dict(head.spec), "captions": head.captions,
                            "title_weight": head.title_weight, "classifier": _classifier_file(out, name, head),
                            "calibration": head.calibration.to_dict(),
                            "log_prior": None if head.log_prior is None else [float(v) for v in head.log_prior]}
    with atomic_write(out / WEIGHTS_FILE, "wb") as f:
        f.write(safetensors_bytes({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    with atomic_write(out / CALIBRATION_FILE, "wb") as f:
        f.write(buffer.getvalue())
    write_json(out / LABELLER_FILE, {"format": FORMAT, "version": 1, "kind": kind, "weights": WEIGHTS_FILE,
                                     "inputs": features.inputs, "batch_size": batch_size, **info,
                                     "attributes": attributes})
    return {name: head.calibration for name, head in heads.items()}
