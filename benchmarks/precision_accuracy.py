"""Accuracy at each encoding precision on the fashion test split: the aligned lite0-minilm
zero-shot (`clipft zeroshot`, photo + title, and photo alone) and a fine-tuned run labelling
the same products (`clipft predict`), for fp32, amp_bf16 and int8.

    python benchmarks/precision_accuracy.py --cache-dir /tmp/cache

Needs the alignment (`clipft align --config benchmarks/configs/align-fashion.yaml --out
runs/align-lite0-minilm`) and the fused fine-tuning run of benchmarks/title_ablation.py
(benchmarks/.work/title_ablation/fusion). Results: benchmarks/results/precision_accuracy.{csv,md}.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

from clipft.catalogue import CatalogueSource
from clipft.commands.predict import run_predict
from clipft.commands.zeroshot import run_zeroshot
from clipft.fileio import atomic_write
from clipft.reporting.tables import markdown_table
from clipft.scoring import EncodeOptions
from clipft.training.config import load_config
from review_audit import split_csv  # benchmarks/ is the script's folder

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PROMPTS = ["gender", "category", "color", "season"]


def zeroshot_rows(data: Path, work: Path, precision: str, inputs: str | None, args) -> list[dict]:
    out = work / f"zeroshot-{precision}-{inputs or 'fusion'}"
    started = time.perf_counter()
    options = EncodeOptions(cache_dir=args.cache_dir, device="cpu", precision=precision)
    totals, _ = run_zeroshot(CatalogueSource(str(data)), PROMPTS, out, "lite0-minilm", args.pretrained, options, inputs)
    seconds = time.perf_counter() - started
    return [{"method": f"aligned zero-shot ({inputs or 'photo + title'})", "precision": precision, "attribute": a,
             "accuracy": m["accuracy"], "n": m["n"], "seconds": round(seconds, 1)} for a, m in totals.metrics.items()]


def predict_rows(data: Path, work: Path, precision: str, args) -> list[dict]:
    out = work / f"predict-{precision}"
    started = time.perf_counter()
    run_predict(args.run, CatalogueSource(str(data)), out,
                EncodeOptions(cache_dir=args.cache_dir, device="cpu", precision=precision), progress=False)
    seconds = time.perf_counter() - started
    metrics = json.loads((out / "metrics.json").read_text())["attributes"]
    return [{"method": "fine-tuned (photo + title)", "precision": precision, "attribute": a, "accuracy": m["accuracy"],
             "n": m["n"], "seconds": round(seconds, 1)} for a, m in metrics.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrained", default=str(REPO / "runs" / "align-lite0-minilm" / "best.pt"))
    parser.add_argument("--run", default=str(HERE / ".work" / "title_ablation" / "fusion"))
    parser.add_argument("--precisions", default="fp32,amp_bf16,int8")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args()

    work = HERE / ".work" / "precision_accuracy"
    work.mkdir(parents=True, exist_ok=True)
    cfg = load_config(HERE / "configs" / "align-fashion.yaml")
    data = split_csv(cfg.catalogue.data, Path(args.pretrained).parent / "splits.csv", work / "test.csv")
    rows = []
    for precision in args.precisions.split(","):
        rows += zeroshot_rows(data, work, precision, None, args)
        rows += zeroshot_rows(data, work, precision, "image", args)
        rows += predict_rows(data, work, precision, args)
        print(pd.DataFrame(rows).tail(12).to_string(), flush=True)
    table = pd.DataFrame(rows)
    out = Path(args.out)
    with atomic_write(out / "precision_accuracy.csv") as f:
        table.to_csv(f, index=False)
    wide = table.pivot_table(index=["method", "attribute"], columns="precision", values="accuracy", sort=False)
    fp32 = wide["fp32"]
    for precision in wide.columns.drop("fp32"):
        wide[f"{precision} - fp32 (points)"] = ((wide[precision] - fp32) * 100).round(2)
    with atomic_write(out / "precision_accuracy.md") as f:
        f.write(f"Fashion test split ({int(table['n'].max())} products), `python benchmarks/precision_accuracy.py "
                f"--cache-dir {args.cache_dir}`:\n\n" + markdown_table(wide))
    print(markdown_table(wide))


if __name__ == "__main__":
    main()
