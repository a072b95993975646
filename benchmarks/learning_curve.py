"""How many labels does each attribute need? Learning curves on the fashion catalogue.

    python benchmarks/learning_curve.py --set cache_dir=/tmp/cache

`clipft curve --config benchmarks/configs/curve-fashion.yaml` (the aligned offline model, its split,
locked towers) for gender, articleType (top 20), baseColour (top 15) and season, with 1, 2, 4,
... 64 labels per class and the whole train split, 3 seeds, and three trained methods
(fine-tuning with bare-label captions, with templated captions, logistic-regression probe)
beside the zero-shot and majority-class lines. The run folder (benchmarks/.work/learning_curve/)
keeps every finished point, so an interrupted run resumes; the CSV, plots and table are copied
to benchmarks/results/learning_curve/ with the wall-clock time of this invocation.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from clipft.training.config import load_config
from clipft.fileio import write_json
from clipft.commands.curve import DEFAULT_SIZES, METHODS, parse_sizes, run_curve

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(HERE / "configs" / "curve-fashion.yaml"))
    parser.add_argument("--sizes", default=",".join("all" if s is None else str(s) for s in DEFAULT_SIZES))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config overrides (e.g. cache_dir=...)")
    parser.add_argument("--work", default=str(HERE / ".work" / "learning_curve"))
    parser.add_argument("--out", default=str(HERE / "results" / "learning_curve"))
    args = parser.parse_args()

    started = time.perf_counter()
    cfg = load_config(args.config, args.overrides)
    curve = run_curve(cfg, args.work, parse_sizes(args.sizes), [int(s) for s in args.seeds.split(",")], tuple(METHODS))
    seconds = time.perf_counter() - started
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in Path(args.work).glob("*"):
        if path.name == "curve.csv" or path.name.startswith(("curve_", "labels_needed")):
            shutil.copy2(path, out / path.name)
    write_json(out / "run.json", {"command": f"python benchmarks/learning_curve.py {' '.join(sys.argv[1:])}",
                                  "wall_seconds": round(seconds, 1), "points": len(curve),
                                  "train_seconds": round(float(curve["train_seconds"].sum()), 1)})
    print(f"{len(curve)} points; {seconds:.0f}s wall clock (this invocation)")


if __name__ == "__main__":
    main()
