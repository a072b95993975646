"""Two learning curves side by side: mean test accuracy over seeds per attribute, method and
size, the new curve's minus the old one's.

    python benchmarks/compare_curves.py benchmarks/results/learning_curve/curve_single_scale.csv \\
        benchmarks/results/learning_curve/curve.csv --out benchmarks/results/learning_curve/compared.md

The old curve is the single-scale model's (the previous release's curve.csv, kept beside the new one).
"""
from __future__ import annotations

import argparse
import sys

import pandas as pd

from clipft.fileio import atomic_write
from clipft.reporting.tables import markdown_table


def compare(old: pd.DataFrame, new: pd.DataFrame, sizes: list[str]) -> pd.DataFrame:
    """Rows (attribute, method), columns per size: 'new (new - old)' of the mean accuracy."""
    def means(curve):
        curve = curve.astype({"size": str})
        return curve[curve["size"].isin(sizes)].groupby(["attribute", "method", "size"])["accuracy"].mean()

    before, after = means(old), means(new)
    both = pd.DataFrame({"old": before, "new": after}).dropna()
    both["cell"] = [f"{n:.3f} ({n - o:+.3f})" for o, n in zip(both["old"], both["new"])]
    table = both["cell"].unstack("size").reindex(columns=sizes)
    return table.reset_index()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--sizes", default="1,2,4,8,16,all")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    table = compare(pd.read_csv(args.old), pd.read_csv(args.new), args.sizes.split(","))
    with atomic_write(args.out) as f:
        f.write(f"Mean test accuracy over seeds, new (new - old); `python benchmarks/compare_curves.py "
                f"{' '.join(sys.argv[1:])}`\n\n")
        f.write(markdown_table(table))
    print(table.to_string())


if __name__ == "__main__":
    main()
