"""Putting trained runs to work on the fashion catalogue: how much can be labelled without a
person at 95% precision, and how well `clipft audit` finds wrong catalogue labels.

    python benchmarks/review_audit.py --set cache_dir=/tmp/cache

1. Review coverage: `clipft finetune --config benchmarks/configs/titles-fashion.yaml` (photo + title fused,
   title dropout) and `clipft probe` (logistic regression, fused inputs) on the same split, then
   `clipft predict` on the test split of each: per attribute, the share auto-labelled at the
   threshold chosen on validation for 95% precision, the accuracy of that part, and overall.
2. Audit: 5% of the articleType (top 20) and baseColour (top 15) labels flipped at random
   (seeded) to another class; a probe run trained on that noisy catalogue; `clipft audit` over
   it; precision and recall at finding the flips. Once with photo + title, once photos only.
3. The same audit on the catalogue as it is: how many of its own labels it questions.

Starts from the aligned offline model
(`clipft align --config benchmarks/configs/align-fashion.yaml --out runs/align-lite0-minilm`) and its
split. Runs are kept under benchmarks/.work/review_audit/; results go to
benchmarks/results/review_audit.{json,md} and review_coverage_*.png (no photos are written there).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from clipft.commands.audit import run_audit
from clipft.commands.finetune import run_finetune
from clipft.commands.predict import run_predict
from clipft.commands.probe import run_probe
from clipft.calibration import GUARANTEE
from clipft.catalogue import CatalogueSource
from clipft.fileio import atomic_write, write_json
from clipft.prompts import load_prompt_spec
from clipft.reporting.tables import markdown_table
from clipft.scoring import EncodeOptions
from clipft.training.config import load_config

TARGET_PRECISION = 0.95  # the default of `clipft predict`; thresholds are refitted at it (catalogue_schema.py too)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
FLIPPED = {"category": "prompts/category.yaml", "color": "prompts/color.yaml"}


def split_csv(data: str, splits: Path, path: Path, split: str = "test") -> Path:
    """The ``split`` rows of the catalogue ``data``, image paths made absolute so that the cache is shared."""
    frame = pd.read_csv(data, dtype=str)
    frame["image"] = [str((Path(data).parent / "images" / f"{i}.jpg").resolve()) for i in frame["id"]]
    chosen = pd.read_csv(splits, dtype=str).query("split == @split")["id"]
    frame[frame["id"].isin(chosen)].to_csv(path, index=False)
    return path


def flip_labels(data: str, path: Path, share: float, seed: int) -> tuple[Path, dict[str, set]]:
    """The catalogue ``data`` with ``share`` of each flipped attribute's labels (within its prompt
    file's classes) changed to another class at random; returns the file and the flipped ids."""
    rng = np.random.default_rng(seed)
    frame = pd.read_csv(data, dtype=str)
    frame["image"] = [str((Path(data).parent / "images" / f"{i}.jpg").resolve()) for i in frame["id"]]
    flipped = {}
    for name, prompt in FLIPPED.items():
        spec = load_prompt_spec(REPO / prompt)
        eligible = np.flatnonzero(frame[spec.column].isin(spec.classes).to_numpy())
        chosen = rng.choice(eligible, size=round(share * len(eligible)), replace=False)
        frame.loc[chosen, spec.column] = [rng.choice([c for c in spec.classes if c != v])
                                          for v in frame.loc[chosen, spec.column]]
        flipped[name] = set(frame["id"].iloc[chosen])
    frame.to_csv(path, index=False)
    return path, flipped


def coverage_rows(name: str, totals) -> list[dict]:
    return [{"run": name, "attribute": a, "n": m["n"], "coverage": m["coverage"], "auto_accuracy": m["auto_accuracy"],
             "accuracy": m["accuracy"], "threshold": m["threshold"]} for a, m in totals.metrics.items()]


def review_coverage(args, work: Path, results: Path) -> pd.DataFrame:
    base = load_config(args.config, args.overrides)
    runs = {"fine-tuned (fusion)": lambda out: run_finetune(base, out, progress=False),
            "probe (fusion)": lambda out: run_probe(base, out, ("logistic",), ("fusion",), progress=False)}
    test = split_csv(base.catalogue.data, Path(base.split.splits_from), work / "test.csv")
    rows = []
    for name, train in runs.items():
        run_dir = work / name.split()[0]
        if not (run_dir / "labeller.json").is_file():
            train(run_dir)
        # The thresholds are fitted again here, so runs trained under an earlier rule are scored by today's.
        totals = run_predict(run_dir, CatalogueSource(str(test)), work / f"predict-{run_dir.name}",
                             EncodeOptions(cache_dir=base.runtime.cache_dir), target_precision=TARGET_PRECISION,
                             guarantee=GUARANTEE, progress=False)
        shutil.copy(work / f"predict-{run_dir.name}" / "risk_coverage.png", results / f"review_coverage_{run_dir.name}.png")
        rows += coverage_rows(name, totals)
    return pd.DataFrame(rows)


def audit_flips(args, work: Path) -> tuple[pd.DataFrame, dict]:
    base = load_config(args.config, args.overrides + [f"prompts=[{', '.join(FLIPPED.values())}]"])
    noisy, flipped = flip_labels(base.catalogue.data, work / "styles_flipped.csv", args.share, args.seed)
    rows, real = [], {}
    for inputs in ("fusion", "image"):
        cfg = load_config(args.config, args.overrides + [f"prompts=[{', '.join(FLIPPED.values())}]", f"data={noisy}",
                                                         f"inputs={inputs}"])
        run_dir = work / f"probe-flipped-{inputs}"
        if not (run_dir / "labeller.json").is_file():
            run_probe(cfg, run_dir, ("logistic",), (inputs,), progress=False)
        started = time.perf_counter()
        issues, _ = run_audit(run_dir, CatalogueSource(str(noisy), seed=args.seed), work / f"audit-flipped-{inputs}",
                              EncodeOptions(cache_dir=base.runtime.cache_dir), progress=False)
        seconds = time.perf_counter() - started
        for name, truth in flipped.items():
            found = set(issues.loc[issues["attribute"] == name, "id"].astype(str))
            hits = len(found & truth)
            rows.append({"inputs": inputs, "attribute": name, "flipped": len(truth), "flagged": len(found),
                         "precision": hits / max(len(found), 1), "recall": hits / len(truth),
                         "audit_seconds": round(seconds, 1)})
        clean = CatalogueSource(str(base.catalogue.data), seed=args.seed)
        issues, summary = run_audit(run_dir, clean, work / f"audit-clean-{inputs}",
                                    EncodeOptions(cache_dir=base.runtime.cache_dir), progress=False)
        real[inputs] = {name: {"audited": s["audited"], "flagged": s.get("issues", 0),
                               "top": issues[issues["attribute"] == name].head(10)[["id", "given", "suggested", "confidence"]]
                               .to_dict("records")} for name, s in summary.items()}
    return pd.DataFrame(rows), real


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(HERE / "configs" / "titles-fashion.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--share", type=float, default=0.05, help="Share of labels flipped per attribute.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default=str(HERE / ".work" / "review_audit"))
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args()
    work, results = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    coverage = review_coverage(args, work, results)
    print(coverage.to_string(index=False), flush=True)
    audit, real = audit_flips(args, work)
    print(audit.to_string(index=False), flush=True)
    command = f"python benchmarks/review_audit.py {' '.join(sys.argv[1:])}"
    write_json(results / "review_audit.json", {"command": command, "seconds": round(time.perf_counter() - started, 1),
                                               "coverage": coverage.to_dict("records"), "audit": audit.to_dict("records"),
                                               "audit_of_the_catalogue_as_it_is": real})
    with atomic_write(results / "review_audit.md") as f:
        f.write(f"Command: `{command}`\n\nReview coverage at 95% precision (test split):\n\n{markdown_table(coverage)}\n"
                f"Audit of {args.share:.0%} flipped labels:\n\n{markdown_table(audit)}")


if __name__ == "__main__":
    main()
