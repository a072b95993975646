"""Photos only: does averaging the fine-tuned model with a probe on the trunk's features help?
(issue 25 lists "ensembling the fine-tuned and probe heads"). The fine-tuned run's calibrated
probabilities (`Labeller.predict_proba`) and those of a logistic regression on the trunk's
standardised multi-scale features (benchmarks/trunk_probe.py's lite0 features and recipe) are
averaged with a weight per attribute chosen on validation, and scored on the test split.

    python benchmarks/trunk_probe.py     # the trunk features, once
    python benchmarks/photos_ensemble.py --run benchmarks/.work/photos_only/multi-scale/finetune \
        --cache-dir /tmp/clipft-bench-cache

Needs ../shared/data/fashion. Results: benchmarks/results/photos_ensemble.md.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from review_audit import split_csv  # benchmarks/ is the script's folder
from trunk_probe import fit_trunk_probe

from clipft.catalogue import load_catalogue
from clipft.fileio import atomic_write
from clipft.labeller import Labeller
from clipft.reporting.tables import markdown_table

HERE = Path(__file__).resolve().parent
FASHION = HERE.parent.parent / "shared" / "data" / "fashion"
WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)  # the fine-tuned model's share; 1.0 is the fine-tuned model alone


def probe_proba(x: np.ndarray, frame: pd.DataFrame, column: str, classes: list[str]) -> dict[str, np.ndarray]:
    """Probabilities (columns in ``classes`` order) of trunk_probe's recipe on val and test rows."""
    scaler, classifier = fit_trunk_probe(x, frame, column, classes)
    order = [list(classifier.classes_).index(c) for c in classes]
    return {s: classifier.predict_proba(scaler.transform(x[(frame["split"] == s).to_numpy()]))[:, order]
            for s in ("val", "test")}


def attribute_rows(name: str, column: str, classes, tuned: dict, probe: dict, truth: dict) -> dict:
    """Test accuracy of each model and of the average with the weight best on validation."""
    def accuracy(proba, split, weight):
        keep = np.isin(truth[split], classes)
        mixed = weight * proba[split] + (1 - weight) * probe[split]
        return float(np.mean(np.asarray(classes)[mixed[keep].argmax(axis=1)] == truth[split][keep]))

    weight = max(WEIGHTS[::-1], key=lambda w: accuracy(tuned, "val", w))  # a tie goes to the fine-tuned model
    return {"attribute": name, "fine-tuned": accuracy(tuned, "test", 1.0), "trunk probe": accuracy(tuned, "test", 0.0),
            "weight (val)": weight, "average": accuracy(tuned, "test", weight)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a photos-only fine-tuned run folder")
    parser.add_argument("--features", default=str(HERE / ".work" / "trunk_probe" / "lite0.npy"))
    parser.add_argument("--splits", default="runs/align-lite0-minilm/splits.csv")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--work", default=str(HERE / ".work" / "photos_ensemble"))
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args()
    frame = pd.read_csv(FASHION / "styles.csv", on_bad_lines="skip", dtype={"id": str}).merge(
        pd.read_csv(args.splits, dtype={"id": str})[["id", "split"]], on="id")
    x = np.load(args.features)
    if not np.array_equal(np.load(args.features.replace(".npy", ".ids.npy")).astype(str), frame["id"].to_numpy()):
        raise SystemExit(f"{args.features} holds the features of other products: run benchmarks/trunk_probe.py again")
    labeller = Labeller.load(args.run, cache_dir=args.cache_dir)
    Path(args.work).mkdir(parents=True, exist_ok=True)
    tuned = {s: labeller.predict_proba(load_catalogue(split_csv(str(FASHION / "styles.csv"), Path(args.splits),
                                                                Path(args.work) / f"{s}.csv", s)))
             for s in ("val", "test")}
    truth = {s: frame.loc[frame["split"] == s] for s in ("val", "test")}
    rows = []
    for name, head in labeller.heads.items():
        column, classes = head.spec.column, list(head.classes)
        probe = probe_proba(x, frame, column, classes)
        rows.append(attribute_rows(name, column, classes, {s: tuned[s][name] for s in tuned}, probe,
                                   {s: truth[s][column].to_numpy() for s in truth}))
    table = pd.DataFrame(rows)
    table.loc[len(table)] = {"attribute": "mean", **table.drop(columns=["attribute", "weight (val)"]).mean().to_dict()}
    with atomic_write(Path(args.out) / "photos_ensemble.md") as f:
        f.write(f"Photos only, fashion test split (`python benchmarks/photos_ensemble.py {' '.join(sys.argv[1:])}`): "
                "the fine-tuned run, a logistic regression on the trunk's standardised features, and their "
                "average (the fine-tuned model's weight chosen on validation)\n\n"
                f"{markdown_table(table.round(3))}\n")
    print(table.round(3).to_string(index=False))


if __name__ == "__main__":
    main()
