"""Fine-tuned accuracy with 16, 64 and 256 labels per class, per attribute, on the fashion
catalogue, starting from the aligned offline model.

    python benchmarks/finetune_shots.py --aligned runs/align-lite0-minilm

Each (attribute, shots) pair is one `clipft finetune` run (bare-label captions, locked image
trunk, the alignment's own split, so no test photo was seen in alignment) under benchmarks/.work/; the test-split rows
of every run's comparison table are collected into benchmarks/results/finetune_shots.{csv,md}.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from clipft.training.config import load_config
from clipft.fileio import atomic_write
from clipft.commands.finetune import run_finetune
from clipft.reporting.tables import markdown_table, model_label

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
ATTRIBUTES = {"gender": "prompts/gender.yaml", "category": "prompts/category.yaml", "color": "prompts/color.yaml"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--aligned", required=True, 
                        help="run folder of the aligned lite0-minilm (clipft align --config "
                             "benchmarks/configs/align-fashion.yaml)")
    parser.add_argument("--shots", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--attributes", nargs="+", default=list(ATTRIBUTES), choices=list(ATTRIBUTES))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="extra config overrides for every run (e.g. cache_dir=...)")
    parser.add_argument("--work", default=str(HERE / ".work" / "finetune_shots"))
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args()

    rows = []
    for attribute in args.attributes:
        for shots in args.shots:
            cfg = load_config(HERE / "configs" / "finetune-fashion.yaml", [
                f"prompts=[{REPO / ATTRIBUTES[attribute]}]", f"shots={shots}", f"pretrained={Path(args.aligned) / 'best.pt'}",
                f"splits_from={Path(args.aligned) / 'splits.csv'}",
                *args.overrides,
            ])
            print(f"== {attribute}, {shots} labels per class", flush=True)
            result = run_finetune(cfg, Path(args.work) / f"{attribute}-{shots}", progress=False)
            table = result.comparison.assign(shots=shots, train_seconds=round(result.train_seconds, 1),
                                             best_epoch=result.best_epoch)
            print(table.to_string(index=False), flush=True)
            rows.append(table)
    results = pd.concat(rows, ignore_index=True)
    out = Path(args.out)
    with atomic_write(out / "finetune_shots.csv") as f:
        results.to_csv(f, index=False)
    pivot = results.assign(model=model_label(results)).pivot_table(index=["attribute", "shots"], columns="model", values="accuracy", sort=False)
    with atomic_write(out / "finetune_shots.md") as f:
        f.write(f"Test accuracy, command: `python benchmarks/finetune_shots.py {' '.join(sys.argv[1:])}`\n\n")
        f.write(markdown_table(pivot))
    print(pivot.to_string(float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
