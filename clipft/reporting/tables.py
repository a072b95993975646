"""Tables: markdown for the README and benchmark results, the summaries printed at the end
of a run, and labels-needed figures from learning curves."""
from __future__ import annotations

import numpy as np
import pandas as pd

# flat lines of a learning curve: no labels used (size 0)
REFERENCES = ("zero-shot", "catalogue prior (EM)", "majority class")


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


def comparison_text(comparison: pd.DataFrame) -> str:
    """Accuracy and macro-F1 tables of a test comparison, attributes by models, for the terminal."""
    comparison = comparison.assign(model=model_label(comparison)) if "titles" in comparison else comparison
    models = list(dict.fromkeys(comparison["model"]))
    blocks = []
    for metric in ("accuracy", "macro_f1"):
        table = comparison.pivot_table(index="attribute", columns="model", values=metric, sort=False,
                                       dropna=False).reindex(columns=models)
        blocks.append(f"{metric}:\n" + table.to_string(float_format=lambda v: f"{v:.3f}", na_rep="-"))
    return "\n".join(blocks)


def review_table(metrics: dict) -> str:
    """Per attribute: labelled products, accuracy, coverage and accuracy of the auto-labelled part,
    threshold, and the target precision with the probability it is guaranteed with."""
    if not metrics:
        return "(no label columns: coverage and accuracy need labels)"
    frame = pd.DataFrame(metrics).T
    columns = ["n", "accuracy", "coverage", "auto_accuracy", "threshold", "target_precision", "guarantee"]
    return frame[[c for c in columns if c in frame.columns]].to_string(float_format=lambda v: f"{v:.3f}")


def model_label(comparison: pd.DataFrame) -> pd.Series:
    """How a comparison row's model is shown: its name, the WiSE-FT alpha, and whether titles
    were removed (the table keeps them as columns)."""
    alpha = comparison["alpha"].map(lambda a: f" alpha={a:g}")
    wise = comparison["model"] == "wise-ft"
    removed = comparison["titles"].eq("removed").map({True: " (no titles)", False: ""})
    return comparison["model"] + alpha.where(wise, "") + removed


def labels_needed(curve: pd.DataFrame) -> pd.DataFrame:
    """Per attribute and method: mean test accuracy with the whole train split, and the fewest
    labels per class (and labelled photos) whose mean accuracy reaches 90% and 100% of it."""
    trained = curve[~curve["method"].isin(REFERENCES)]
    mean = trained.groupby(["attribute", "method", "size"], sort=False).agg(
        accuracy=("accuracy", "mean"), n_train=("n_train", "mean")).reset_index()
    rows = []
    for (attribute, method), group in mean.groupby(["attribute", "method"], sort=False):
        full = group[group["size"] == "all"]
        if full.empty:
            continue
        target = float(full["accuracy"].iloc[0])
        ordered = group.assign(order=group["size"].map(lambda s: float("inf") if s == "all" else int(s))).sort_values("order")
        row = {"attribute": attribute, "method": method, "accuracy_all": target,
               "n_train_all": int(full["n_train"].iloc[0])}
        for share, label in ((0.9, "90%"), (1.0, "100%")):
            reached = ordered[ordered["accuracy"] >= share * target - 1e-12].iloc[0]
            row[f"shots_{label}"] = reached["size"]
            row[f"n_train_{label}"] = int(round(reached["n_train"]))
        rows.append(row)
    return pd.DataFrame(rows)
