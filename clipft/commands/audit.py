"""``clipft audit``: the catalogue's existing labels that a trained run confidently contradicts
(:mod:`clipft.audit`): label_issues.csv, a contact sheet of the top suspects, summary.json."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..applicability import training_labels
from ..audit import label_issues, multilabel_issues
from ..catalogue import CatalogueSource
from ..fileio import atomic_write, output_folder, write_json
from ..fusion import batched_parts
from ..metrics import check_labels
from ..multilabel import check_multi_labels
from ..precision import encoding_precision, resolve_precision
from ..reporting.plots import plot_contact_sheet
from ..scoring import EncodeOptions
from .predict import load_labeller, title_column_for

log = logging.getLogger(__name__)


@torch.no_grad()
def audit_attribute(labeller, name: str, catalogue, features, rows: np.ndarray, folds: int, seed: int):
    """(suspect labels, summary) of one attribute; an attribute with no labelled product among
    ``rows`` has nothing to audit and says so."""
    head = labeller.heads[name]
    # out-of-list values as the 'other' class; no label where the catalogue says the attribute does not apply
    labels = training_labels(head.spec, [h.spec for h in labeller.heads.values()], catalogue.frame)[rows]
    if head.spec.multi:
        labels, check = check_multi_labels(labels, head.spec.classes, head.spec.separator)
        known = check.known
    else:
        known = check_labels(labels, head.spec.classes).known
    if not known.any():
        log.warning("%s: no product has a %s label among the classes of %s: nothing to audit",
                    catalogue.source, head.spec.column, name)
        issues = pd.DataFrame(columns=["id", "given", "suggested", "confidence", "given_probability", "rank"])
        summary = {"audited": 0, "left_out_rare_classes": 0, "classes": 0, "issues": 0}
    else:
        parts = batched_parts(features, rows[known], labeller.batch_size)
        X = head.features(parts, labeller.inputs)  # what the head scores: cross-validated on it
        ids = np.asarray(catalogue.ids, dtype=object)[rows[known]]
        if head.spec.multi:
            issues, summary = multilabel_issues(ids, labels[known], X, head.spec.classes, head.spec.separator, folds,
                                                seed)
        else:
            issues, summary = label_issues(ids, labels[known].astype(str), X, folds, seed)
    return issues.assign(attribute=name, column=head.spec.column), summary


def _contact_sheet(issues: pd.DataFrame, catalogue, name: str, top: int, path: Path) -> None:
    if issues.empty:
        return
    paths = dict(zip(catalogue.ids, catalogue.image_paths))
    plot_contact_sheet([paths[i] for i in issues["id"][:top]],
                       [f"{g} -> {s} ({c:.2f})" for g, s, c in zip(issues["given"], issues["suggested"],
                                                                  issues["confidence"])][:top],
                       f"{name}: top suspects (given -> suggested)", path)


def run_audit(run: str | Path, source: CatalogueSource, out: str | Path, options: EncodeOptions = EncodeOptions(),
              attributes=None, folds: int = 5, top: int = 24, progress: bool = True) -> tuple[pd.DataFrame, dict]:
    """Audit every labelled attribute of the catalogue; writes label_issues.csv, suspects_<attribute>.png
    and summary.json into ``out``, together, when the audit succeeds."""
    labeller = load_labeller(run, options.device, options.cache_dir, attributes)
    with output_folder(out, ("label_issues.csv", "summary.json"), previous=("suspects_*.png",)) as stage:
        source.title_column = title_column_for(source, labeller)
        catalogue = source.load()
        with encoding_precision(resolve_precision(options.precision, labeller.device)):
            features, rows, _, _ = labeller.catalogue_features(catalogue, options.skip_bad, options.batch_size,
                                                               options.workers, progress)
        tables, summary = [], {}
        for name, head in labeller.heads.items():
            if head.spec.column not in catalogue.frame.columns:
                continue
            issues, summary[name] = audit_attribute(labeller, name, catalogue, features, rows, folds, source.seed)
            tables.append(issues)
            _contact_sheet(issues, catalogue, name, top, stage / f"suspects_{name}.png")
        columns = ["id", "attribute", "column", "given", "suggested", "confidence", "given_probability", "rank"]
        table = pd.concat(tables, ignore_index=True)[columns] if tables else pd.DataFrame(columns=columns)
        with atomic_write(stage / "label_issues.csv") as f:
            table.to_csv(f, index=False)
        write_json(stage / "summary.json", {"run": str(run), "data": str(source.data), "folds": folds,
                                            "attributes": summary})
    return table, summary
