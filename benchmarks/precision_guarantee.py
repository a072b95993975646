"""Does the precision target hold on the fashion test split (issue 25)? Each run's auto-accept
threshold is chosen on its validation split with the finite-sample guarantee of
clipft.calibration (Learn then Test with fixed-sequence testing over the thresholds at coverages
10%, 15%, ... 100%, Clopper-Pearson), and the labels it auto-accepts on the test split are
checked against the target; beside it, the empirical rule it replaced (the lowest threshold at
which validation precision reaches the target), applied to the same test predictions.

    python benchmarks/precision_guarantee.py --set cache_dir=/tmp/cache

Run from the repository root. Needs the aligned offline model (`clipft align --config
benchmarks/configs/align-fashion.yaml --out runs/align-lite0-minilm`). Trains one run, photos
only, on gender, category, color and season (benchmarks/configs/photos-fashion.yaml with the
trunk locked, `unlocked_image_groups=0 epochs=20`: the cached fast path), kept under
benchmarks/.work/precision_guarantee/ and not repeated; the photos-only and photo + title runs
of benchmarks/catalogue_schema.py ('listed': category and color) are used as they are when
present. Each run labels the test split with `clipft predict --target-precision T --guarantee G`.
Results: benchmarks/results/precision_guarantee.{csv,md}.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from review_audit import split_csv  # benchmarks/ is the script's folder
from scipy.special import softmax

from clipft.calibration import confidence_threshold
from clipft.catalogue import CatalogueSource
from clipft.commands.finetune import run_finetune
from clipft.commands.predict import run_predict
from clipft.fileio import atomic_write
from clipft.prompts import load_prompt_spec
from clipft.reporting.tables import markdown_table
from clipft.scoring import EncodeOptions
from clipft.training.config import load_config

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work" / "precision_guarantee"
SCHEMA = HERE / ".work" / "catalogue_schema"
CONFIG = HERE / "configs" / "photos-fashion.yaml"
OVERRIDES = ["unlocked_image_groups=0", "epochs=20"]
# run name -> its folder; the first is trained here, the others are reused when present
RUNS = {"photos only (4 attributes)": WORK / "photos-only",
        "photos only (catalogue_schema listed)": SCHEMA / "photosonly" / "listed",
        "photo + title (catalogue_schema listed)": SCHEMA / "photo-title" / "listed"}
TARGETS = (0.9, 0.95)
GUARANTEES = (0.95,)


def empirical_threshold(confidence: np.ndarray, correct: np.ndarray, target: float) -> float:
    """The old rule, kept as the baseline: the lowest confidence at which the validation labels at
    or above it are correct at a rate of at least ``target`` (``inf`` when none is)."""
    order = np.argsort(-confidence, kind="stable")
    conf, hits = confidence[order], correct[order].astype(float)
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    last_of_value = np.r_[conf[1:] != conf[:-1], True]  # a threshold takes every row of its confidence
    reached = np.flatnonzero((precision >= target) & last_of_value)
    return float(conf[reached[-1]]) if len(reached) else float("inf")


def validation(run: Path, attribute: str) -> tuple[np.ndarray, np.ndarray]:
    """(calibrated confidence, correct) of the run's validation products for one attribute."""
    data = np.load(run / "calibration.npz")
    labeller = json.loads((run / "labeller.json").read_text())
    temperature = labeller["attributes"][attribute]["calibration"]["temperature"]
    proba = softmax(data[f"{attribute}.logits"] / temperature, axis=1)
    return proba.max(axis=1), proba.argmax(axis=1) == data[f"{attribute}.y"]


def test_frame(predicted: Path, test: pd.DataFrame, attribute: str) -> pd.DataFrame:
    """The test products labelled with one of the attribute's classes: confidence, correct, auto."""
    spec = load_prompt_spec(attribute)
    frame = pd.read_csv(predicted / "predictions.csv", dtype={"id": str}, keep_default_na=False)
    frame = frame.merge(test[["id", spec.column]].rename(columns={spec.column: "value"}), on="id")
    frame = frame[frame["value"].isin(spec.classes) & (frame[f"{attribute}_status"] != "n/a")]
    return pd.DataFrame({"conf": frame[f"{attribute}_prob"].astype(float),
                         "correct": frame[attribute] == frame["value"],
                         "auto": frame[f"{attribute}_status"] == "auto"})


def rule_row(frame: pd.DataFrame, threshold: float) -> dict:
    """Coverage and accuracy of the auto-accepted part of the test split at ``threshold``
    (compared with probabilities rounded to 4 places, as predictions.csv holds them)."""
    auto = frame["conf"] >= threshold
    return {"threshold": threshold if np.isfinite(threshold) else None, "coverage": float(auto.mean()),
            "auto_accuracy": float(frame["correct"][auto].mean()) if auto.any() else None}


def rows_for(name: str, run: Path, test_csv: Path, target: float, guarantee: float, cache_dir) -> list[dict]:
    """Per attribute: the guaranteed threshold (from `clipft predict`) and the empirical one, each
    with its coverage and auto-accepted accuracy on the test split."""
    predicted = WORK / f"{run.parent.name}-{run.name}-predict-t{target}-g{guarantee}"
    if not (predicted / "metrics.json").is_file():
        run_predict(run, CatalogueSource(str(test_csv)), predicted, EncodeOptions(cache_dir=cache_dir),
                    target_precision=target, guarantee=guarantee, progress=False)
    metrics = json.loads((predicted / "metrics.json").read_text())
    test = pd.read_csv(test_csv, dtype=str, keep_default_na=False)
    rows = []
    for attribute, m in metrics["attributes"].items():
        calibration, frame = metrics["calibration"][attribute], test_frame(predicted, test, attribute)
        if len(frame) != m["n"] or not np.isclose(frame["correct"].mean(), m["accuracy"]):
            raise RuntimeError(f"{predicted}: {attribute}: test labels do not match metrics.json")
        guaranteed = np.inf if calibration["threshold"] is None else calibration["threshold"]
        if (rule_row(frame, guaranteed)["coverage"] - m["coverage"]) * m["n"] > 2:  # beyond rounding
            raise RuntimeError(f"{predicted}: {attribute}: auto labels do not match the threshold")
        confidence, correct = validation(run, attribute)
        base = {"run": name, "attribute": attribute, "target": target, "guarantee": guarantee,
                "val_products": calibration["n_val"], "test_products": m["n"], "test_accuracy": m["accuracy"]}
        rows += [{**base, "rule": "guaranteed (clipft)", "threshold": calibration["threshold"],
                  "coverage": m["coverage"], "auto_accuracy": m["auto_accuracy"]},
                 {**base, "rule": "empirical (old)", **rule_row(frame, empirical_threshold(confidence, correct, target))}]
    for row in rows:
        row["meets_target"] = row["auto_accuracy"] is None or row["auto_accuracy"] >= target
    return rows


def resplit_rows(name: str, run: Path, test_csv: Path, target: float, guarantee: float, splits: int = 100) -> list[dict]:
    """Issue 25's second check: the run's validation and test products pooled and split again at
    random (``splits`` times, the same sizes); per attribute and rule, the share of re-splits in
    which the threshold chosen on the new validation part keeps the target on the new test part
    (a re-split that accepts nothing keeps it), and the mean coverage."""
    predicted = WORK / f"{run.parent.name}-{run.name}-predict-t{target}-g{guarantee}"
    metrics = json.loads((predicted / "metrics.json").read_text())
    test = pd.read_csv(test_csv, dtype=str, keep_default_na=False)
    rules = {"guaranteed (clipft)": lambda c, k: confidence_threshold(c, k, target, guarantee),
             "empirical (old)": lambda c, k: empirical_threshold(c, k, target)}
    rows = []
    for attribute in metrics["attributes"]:
        val_conf, val_correct = validation(run, attribute)
        frame = test_frame(predicted, test, attribute)
        conf = np.r_[np.round(val_conf, 4), frame["conf"].to_numpy()]  # predictions.csv rounds to 4 places
        correct = np.r_[val_correct, frame["correct"].to_numpy()]
        for rule, threshold_of in rules.items():
            kept, coverage = [], []
            for seed in range(splits):
                order = np.random.default_rng(seed).permutation(len(conf))
                val, new_test = order[: len(val_conf)], order[len(val_conf):]
                auto = conf[new_test] >= threshold_of(conf[val], correct[val])
                kept.append(not auto.any() or correct[new_test][auto].mean() >= target)
                coverage.append(auto.mean())
            rows.append({"run": name, "attribute": attribute, "target": target, "guarantee": guarantee,
                         "rule": rule, "splits": splits, "kept_share": float(np.mean(kept)),
                         "mean_coverage": float(np.mean(coverage))})
    return rows


def trained(cfg) -> None:
    """The photos-only run on all four attributes, trained once."""
    folder = RUNS["photos only (4 attributes)"]
    if not (folder / "labeller.json").is_file():
        print(f"== fine-tuning {folder}", flush=True)
        run_finetune(cfg, folder, progress=False)


def report(table: pd.DataFrame, command: str) -> str:
    """The markdown of the results: one table per run, target and guarantee."""
    shown = table.assign(**{c: table[c].map(lambda v: "" if pd.isna(v) else f"{v:.3f}")
                            for c in ("threshold", "coverage", "auto_accuracy", "test_accuracy")})
    shown["meets_target"] = np.where(table["auto_accuracy"].isna(), "yes (none accepted)",
                                     np.where(table["meets_target"], "yes", "**no**"))
    columns = ["attribute", "rule", "val_products", "threshold", "coverage", "auto_accuracy",
               "meets_target", "test_products", "test_accuracy"]
    parts = [(f"Fashion test split, `{command}`; coverage and auto_accuracy on the test split "
             "(auto_accuracy: accuracy of the auto-accepted labels; no threshold: every label to review). "
             "Rules: guaranteed (clipft) is `clipft predict --target-precision T --guarantee G`; empirical (old) "
             "the lowest threshold at which validation precision reaches T.\n")]
    for (name, target, guarantee), group in shown.groupby(["run", "target", "guarantee"], sort=False):
        parts.append(f"\n### {name}, target {target}, guarantee {guarantee}\n\n"
                     + markdown_table(group[columns].set_index("attribute")))
    return "".join(parts)


def resplit_report(table: pd.DataFrame) -> str:
    """The re-split table: per run, attribute, target and rule, the share of re-splits that keep the target."""
    wide = table.pivot_table(index=["run", "attribute", "target"], columns="rule",
                             values=["kept_share", "mean_coverage"], sort=False)
    wide.columns = [f"{rule}: {value}" for value, rule in wide.columns]
    return ("\n### 100 random re-splits of validation and test\n\nThe validation and test products of each run "
            "pooled and split again at random, 100 times, with the same sizes; kept_share: the share of re-splits "
            "whose new test part keeps the target (nothing accepted counts as kept); mean_coverage: the share "
            "auto-accepted, averaged.\n\n" + markdown_table(wide))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for the run trained here (e.g. cache_dir=/tmp/cache)")
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args()

    WORK.mkdir(parents=True, exist_ok=True)
    cfg = load_config(CONFIG, [*OVERRIDES, *args.set])
    trained(cfg)
    test_csv = SCHEMA / "test.csv"
    if not test_csv.is_file():
        test_csv = split_csv(cfg.catalogue.data, Path(cfg.split.splits_from), WORK / "test.csv")
    rows, resplits = [], []
    for name, run in RUNS.items():
        if not (run / "labeller.json").is_file():
            print(f"== {name}: no run at {run}, left out", flush=True)
            continue
        for target in TARGETS:
            for guarantee in GUARANTEES:
                rows += rows_for(name, run, test_csv, target, guarantee, cfg.runtime.cache_dir)
                resplits += resplit_rows(name, run, test_csv, target, guarantee)
    table, resplit_table = pd.DataFrame(rows), pd.DataFrame(resplits)
    out = Path(args.out)
    with atomic_write(out / "precision_guarantee.csv") as f:
        table.to_csv(f, index=False)
    with atomic_write(out / "precision_guarantee_resplits.csv") as f:
        resplit_table.to_csv(f, index=False)
    command = " ".join(["python benchmarks/precision_guarantee.py", *(f"--set {s}" for s in args.set)])
    text = report(table, command) + resplit_report(resplit_table)
    with atomic_write(out / "precision_guarantee.md") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
