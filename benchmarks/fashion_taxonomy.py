"""Write clipft's shipped fashion taxonomy (clipft/resources/taxonomies/fashion.yaml) from the
development catalogue's own columns: masterCategory -> subCategory -> articleType, every
articleType under the parents most of its products have (the catalogue files a handful of
products under a second parent: 'Flip Flops' once under 'Sandal').

    python benchmarks/fashion_taxonomy.py [--data ../shared/data/fashion/styles.csv]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import yaml

from clipft.fileio import atomic_write
from clipft.taxonomy import parse_taxonomy

REPO = Path(__file__).resolve().parents[1]
LEVELS = [{"name": "master_category", "column": "masterCategory"}, {"name": "sub_category", "column": "subCategory"}]


def fashion_tree(frame: pd.DataFrame) -> dict:
    """Nested master -> sub -> [articleTypes], each leaf under its commonest parents, commonest first."""
    paths = frame.groupby(["articleType", "masterCategory", "subCategory"]).size().rename("n").reset_index()
    paths = paths.sort_values("n", ascending=False, kind="stable").drop_duplicates("articleType")
    tree: dict = {}
    for row in paths.itertuples():
        tree.setdefault(row.masterCategory, {}).setdefault(row.subCategory, []).append(row.articleType)
    return tree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "fashion" / "styles.csv"))
    args = parser.parse_args()
    frame = pd.read_csv(args.data, dtype=str, on_bad_lines="skip").dropna(
        subset=["masterCategory", "subCategory", "articleType"])
    data = {"levels": LEVELS, "tree": fashion_tree(frame)}
    taxonomy = parse_taxonomy(data, "fashion")  # refuses a leaf under two parents
    header = (f"# The fashion catalogue's category tree: masterCategory -> subCategory -> articleType, "
              f"{len(taxonomy.leaves)} articleTypes.\n# Written by benchmarks/fashion_taxonomy.py from the "
              f"development catalogue's own columns.\n")
    out = REPO / "clipft" / "resources" / "taxonomies" / "fashion.yaml"
    with atomic_write(out) as f:
        f.write(header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=120))
    print(f"{len(taxonomy.leaves)} leaves under {len({p[1] for p in taxonomy.paths.values()})} sub-categories in {out}")


if __name__ == "__main__":
    main()
