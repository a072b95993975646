"""A labeller's run folder, read and written in one place: what ``finetune`` and ``probe``
leave behind (:func:`save_labeller`) and what ``predict``, ``audit``, ``serve`` and the app
load (:func:`read_labeller`).

A run folder holds ``labeller.json`` (below), the model's weights as ``labeller.safetensors``
(the chosen model: the best epoch, WiSE-FT alpha applied), probe classifiers as ``.skops``
files, and ``calibration.npz`` (validation logits and labels, from which temperatures and
thresholds are fitted). Nothing in it is a pickle: loading a labeller executes no code from
the folder, and every file it names must be a plain file inside the folder.

``labeller.json``::

    format: clipft-labeller, version: 1
    kind: finetune | probe
    model: architecture name;  weights: labeller.safetensors
    inputs: image | text | fusion;  title_column;  batch_size (scoring batches)
    attributes: {name: {prompts: the prompt file as trained, captions: label | template,
                        title_weight, classifier: null | {kind, file}, calibration: {...},
                        log_prior: null | per class, the log prior its scores add}}
    reproduces: the rows of comparison.csv / probe.csv that this labeller scores as
"""
from __future__ import annotations

import contextlib
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError

from .calibration import Calibration, calibrate
from .fileio import atomic_write, write_json
from .defaults import TITLE_WEIGHT
from .fusion import ProductFeatures, batched_parts
from .heads import Head, ProbeHead, PromptHead
from .prompts import PromptSpec, parse_prompt_spec
from .taxonomy import taxonomy_to_dict
from .title_words import check_loaded

FORMAT = "clipft-labeller"
LABELLER_FILE = "labeller.json"
WEIGHTS_FILE = "labeller.safetensors"
CALIBRATION_FILE = "calibration.npz"
DEFAULT_TARGET_PRECISION = 0.95
# The exact types beyond skops' own defaults that the classifiers clipft saves are made of
# (make_classifier's MLP optimiser and forest trees). Exact names, never a prefix: skops reports
# builtins.exec as "builtins.exec", and a prefix such as "builtins." would trust it.
TRUSTED_TYPES = frozenset({"sklearn.neural_network._stochastic_optimizers.AdamOptimizer", "sklearn.tree._tree.Tree"})


class LabellerError(ValueError):
    """A folder that is not a finished run, or a labeller that cannot be used."""


@dataclass
class RunContents:
    """What a run folder holds, read and checked; the model's weights are loaded by the caller."""

    manifest: dict
    heads: dict[str, Head]
    calibration_data: dict[str, np.ndarray]
    weights: Path


def spec_to_dict(spec: PromptSpec) -> dict:
    """The prompt file as trained, in the form :func:`clipft.prompts.parse_prompt_spec` reads."""
    data = {"attribute": spec.attribute, "column": spec.column, "templates": list(spec.templates),
            "classes": {c: list(spec.synonyms[c]) for c in spec.classes}}
    if spec.applies_to:
        data["applies_to"] = {name: list(values) for name, values in spec.applies_to.items()}
    if spec.taxonomy is not None:  # inline: a run folder names no file outside itself
        data["taxonomy"] = taxonomy_to_dict(spec.taxonomy)
    if spec.multi:
        data |= {"multi": True, "separator": spec.separator}
    return data | ({"other": spec.other} if spec.other is not None else {})


# ---- reading -------------------------------------------------------------------------------

def run_file(run_dir: Path, name) -> Path:
    """A file that labeller.json names: a plain file name inside the run folder, never a path
    that leaves it (``../``, an absolute path, a symlink to elsewhere)."""
    manifest = run_dir / LABELLER_FILE
    if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
        raise LabellerError(f"{manifest}: names the file {name!r}; a labeller's files must be plain names "
                            f"inside its run folder")
    path = run_dir / name
    if not path.resolve().is_relative_to(run_dir.resolve()):
        raise LabellerError(f"{manifest}: {name} is a link that leaves the run folder; refused")
    if not path.is_file():  # missing, or a FIFO or device that would block or never end
        raise LabellerError(f"{path}: missing or not a regular file; the run did not finish")
    return path


@contextlib.contextmanager
def reading(path: Path, what: str):
    """Any failure to read a file of the run folder becomes one line naming it: a truncated
    or corrupt file is a damaged run, not a traceback."""
    try:
        yield
    except LabellerError:
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError, EOFError, RuntimeError,
            zipfile.BadZipFile, SafetensorError) as err:
        raise LabellerError(f"{path}: not a readable {what} ({type(err).__name__}: {err}); the run folder is "
                            f"damaged: train the run again, or restore it from a copy") from None


def load_classifier(path: Path):
    import skops.io as sio

    with reading(path, "classifier"):
        refused = [t for t in sio.get_untrusted_types(file=path) if t not in TRUSTED_TYPES]
    if refused:
        raise LabellerError(f"{path}: refused to load types that clipft never saves: {', '.join(refused)} "
                            f"(a classifier file cannot run code here)")
    with reading(path, "classifier"):
        return sio.load(path, trusted=sorted(TRUSTED_TYPES))


def _log_prior(entry: dict, attribute: str, run_dir: Path) -> np.ndarray | None:
    prior = entry.get("log_prior")
    if prior is None:
        return None
    if len(prior) != len(entry["prompts"]["classes"]):
        raise LabellerError(f"{run_dir / LABELLER_FILE}: {attribute}: log_prior has {len(prior)} values for "
                            f"{len(entry['prompts']['classes'])} classes")
    return np.asarray(prior, dtype=np.float32)


def read_manifest(run_dir: Path) -> dict:
    manifest = run_dir / LABELLER_FILE
    if not manifest.is_file():
        hint = " (an unfinished or older run: run it again to finish it)" if (run_dir / "config.yaml").is_file() else ""
        raise LabellerError(f"{run_dir}: not a finished finetune or probe run: no {LABELLER_FILE}{hint}")
    try:
        data = json.loads(run_file(run_dir, LABELLER_FILE).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise LabellerError(f"{manifest}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise LabellerError(f"{manifest}: not a clipft labeller (a JSON {type(data).__name__}, not an object)")
    if data.get("format") != FORMAT or data.get("version") != 1:
        raise LabellerError(f"{manifest}: not a clipft labeller (format {data.get('format')!r}, version "
                            f"{data.get('version')!r})")
    for name in (WEIGHTS_FILE, CALIBRATION_FILE):  # before the model is built: a missing file fails fast
        run_file(run_dir, name)
    missing = [key for key in ("model", "inputs", "attributes") if key not in data]
    if missing or not isinstance(data["attributes"], dict):
        raise LabellerError(f"{manifest}: no {', '.join(missing) or 'attributes object'}; the file is damaged: "
                            f"train the run again, or restore it from a copy")
    return data


def read_head(run_dir: Path, name: str, entry: dict) -> Head:
    """One attribute's head as labeller.json describes it; its classifier file must lie in the run folder."""
    spec = parse_prompt_spec(entry["prompts"], f"{run_dir / LABELLER_FILE}: {name}", files=False)
    calibration = Calibration.from_dict(entry["calibration"])
    classifier = entry.get("classifier")
    if classifier:
        return ProbeHead(spec, load_classifier(run_file(run_dir, classifier["file"])), calibration)
    return PromptHead(spec, entry.get("captions", "label"), float(entry.get("title_weight", TITLE_WEIGHT)),
                      calibration, _log_prior(entry, name, run_dir))


def read_labeller(run_dir: Path) -> RunContents:
    """Everything a run folder holds but the model, checked before any of it is used."""
    manifest = read_manifest(run_dir)
    with reading(run_dir / LABELLER_FILE, "labeller manifest"):
        heads = {name: read_head(run_dir, name, entry) for name, entry in manifest["attributes"].items()}
    calibration = run_file(run_dir, CALIBRATION_FILE)
    with reading(calibration, "calibration file"), np.load(calibration, allow_pickle=False) as data:
        calibration_data = {k: data[k] for k in data.files}
    return RunContents(manifest, heads, calibration_data, run_file(run_dir, WEIGHTS_FILE))


def load_weights(model, path: Path, device, what: str) -> None:
    from safetensors.torch import load_file

    with reading(path, f"weights file for {what}"):
        check_loaded(model.load_state_dict(load_file(path, device=str(device)), strict=False))


# ---- writing -------------------------------------------------------------------------------

@torch.no_grad()
def validation_logits(model, text_fn, head: Head, features: ProductFeatures, val, batch_size: int):
    """(logits, true class index, which of ``val``'s rows they are) of the validation rows
    (``val``: a split's labelled rows and labels per attribute) whose label is one of the head's classes."""
    rows, labels = val.rows[head.spec.attribute], val.labels[head.spec.attribute]
    index = {c: i for i, c in enumerate(head.classes)}
    known = np.array([label in index for label in labels], dtype=bool)
    rows, labels = rows[known], labels[known]
    if not len(rows):
        return np.zeros((0, len(index)), dtype=np.float32), np.zeros(0, dtype=int), known
    logits = head.scorer(model, text_fn)(batched_parts(features, rows, batch_size), features.inputs)
    return logits.astype(np.float32), np.array([index[label] for label in labels]), known


def multi_thresholds(head: Head, logits: np.ndarray, val, known: np.ndarray) -> list[float]:
    """Per class of a multi-valued head, the calibrated probability above which it is chosen,
    fitted for the best F1 on the validation products (``logits``: one row per (product, value)
    of ``val``'s ``known`` rows, as :func:`validation_logits` gives them)."""
    from scipy.special import softmax

    from .multilabel import fit_class_thresholds, indicator

    rows, full = val.rows[head.spec.attribute][known], val.full_labels[head.spec.attribute][known]
    _, first = np.unique(rows, return_index=True)  # one row per product
    truth = indicator(full[first], head.classes, head.spec.separator)
    return [float(t) for t in fit_class_thresholds(softmax(logits[first], axis=1), truth)]


def _head_entry(out: Path, name: str, head: Head) -> dict:
    """labeller.json's entry for one head; a probe's classifier is written beside it."""
    entry = {"prompts": spec_to_dict(head.spec), "calibration": head.calibration.to_dict()}
    if isinstance(head, ProbeHead):
        import skops.io as sio

        file = f"classifier-{name}.skops"
        with atomic_write(out / file, "wb") as f:
            f.write(sio.dumps(head.classifier))
        return entry | {"captions": "label", "title_weight": TITLE_WEIGHT,
                        "classifier": {"kind": type(head.classifier).__name__, "file": file}, "log_prior": None}
    prior = None if head.log_prior is None else [float(v) for v in head.log_prior]
    return entry | {"captions": head.captions, "title_weight": head.title_weight, "classifier": None, "log_prior": prior}


def save_labeller(out: Path, kind: str, model, text_fn, heads: dict[str, Head], features: ProductFeatures, val,
                  batch_size: int, info: dict, target_precision: float = DEFAULT_TARGET_PRECISION) -> dict[str, Head]:
    """Calibrate every head on the validation split ``val`` and write the labeller files into the
    run folder ``out``; returns the calibrated heads. ``info`` adds model, title_column and
    reproduces to labeller.json."""
    from safetensors.torch import save as safetensors_bytes

    arrays, calibrated = {}, {}
    for name, head in heads.items():
        logits, y, known = validation_logits(model, text_fn, head, features, val, batch_size)
        calibration = (calibrate(logits, y, target_precision, name=name) if len(y) else
                       Calibration(target_precision=target_precision))
        if head.spec.multi and len(y):
            calibration.class_thresholds = multi_thresholds(head, logits / calibration.temperature, val, known)
        calibrated[name] = head.calibrated(calibration)
        arrays[f"{name}.logits"], arrays[f"{name}.y"] = logits, y
    with atomic_write(out / WEIGHTS_FILE, "wb") as f:
        f.write(safetensors_bytes({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    with atomic_write(out / CALIBRATION_FILE, "wb") as f:
        f.write(buffer.getvalue())
    write_json(out / LABELLER_FILE, {"format": FORMAT, "version": 1, "kind": kind, "weights": WEIGHTS_FILE,
                                     "inputs": features.inputs, "batch_size": batch_size, **info,
                                     "attributes": {name: _head_entry(out, name, h) for name, h in calibrated.items()}})
    return calibrated
