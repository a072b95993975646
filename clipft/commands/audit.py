"""``clipft audit``: the catalogue's existing labels that a trained run confidently contradicts
(:mod:`clipft.audit`): label_issues.csv, a contact sheet of the top suspects, summary.json."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..audit import audit_features, label_issues
from ..catalogue import CatalogueSource
from ..fileio import atomic_write, output_folder, write_json
from ..fusion import batched_parts
from ..metrics import check_labels
from ..reporting.plots import plot_contact_sheet
from .predict import load_labeller, title_column_for

log = logging.getLogger(__name__)


@torch.no_grad()
def audit_attribute(labeller, name: str, catalogue, features, rows: np.ndarray, folds: int, seed: int):
    """(suspect labels, summary) of one attribute; an attribute with no labelled product among
    ``rows`` has nothing to audit and says so."""
    head = labeller.heads[name]
    labels = catalogue.frame[head.spec.column].to_numpy(dtype=object)[rows]
    known = check_labels(labels, head.spec.classes).known
    if not known.any():
        log.warning("%s: no product has a %s label among the classes of %s: nothing to audit",
                    catalogue.source, head.spec.column, name)
        issues = pd.DataFrame(columns=["id", "given", "suggested", "confidence", "given_probability", "rank"])
        summary = {"audited": 0, "left_out_rare_classes": 0, "classes": 0, "issues": 0}
    else:
        parts = batched_parts(features, rows[known], labeller.batch_size)
        X = audit_features(head, parts, labeller.inputs)
        issues, summary = label_issues(np.asarray(catalogue.ids, dtype=object)[rows[known]], labels[known].astype(str),
                                       X, folds, seed)
    return issues.assign(attribute=name, column=head.spec.column), summary


def _contact_sheet(issues: pd.DataFrame, catalogue, name: str, top: int, path: Path) -> None:
    if issues.empty:
        return
    paths = dict(zip(catalogue.ids, catalogue.image_paths))
    plot_contact_sheet([paths[i] for i in issues["id"][:top]],
                       [f"{g} -> {s} ({c:.2f})" for g, s, c in zip(issues["given"], issues["suggested"],
                                                                  issues["confidence"])][:top],
                       f"{name}: top suspects (given -> suggested)", path)


def run_audit(run: str | Path, source: CatalogueSource, out: str | Path, attributes=None, folds: int = 5,
              skip_bad: bool = False, batch_size: int = 64, workers: int = 0, cache_dir=None, device: str = "auto",
              top: int = 24, progress: bool = True) -> tuple[pd.DataFrame, dict]:
    """Audit every labelled attribute of the catalogue; writes label_issues.csv, suspects_<attribute>.png
    and summary.json into ``out``, together, when the audit succeeds."""
    labeller = load_labeller(run, device, cache_dir, attributes)
    with output_folder(out, ("label_issues.csv", "summary.json"), previous=("suspects_*.png",)) as stage:
        source.title_column = title_column_for(source, labeller)
        catalogue = source.load()
        features, rows, _, _ = labeller.catalogue_features(catalogue, skip_bad, batch_size, workers, progress)
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
