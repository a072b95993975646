"""What a photos-only run gets wrong about colour, and whether the catalogue's colour or the
photo is to blame: the test split's colour errors grouped by the pair of colours confused, and
how often the product's title names the catalogue's colour or the predicted one (a title names a
colour when it holds it as words; the longest name counts, so "Navy Blue" is not "Blue").

    python benchmarks/photos_only.py --set cache_dir=/tmp/cache     # the run, once
    python benchmarks/colour_errors.py

Needs ../shared/data/fashion. Results: benchmarks/results/colour_errors.md.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import pandas as pd

from clipft.fileio import atomic_write
from clipft.prompts import load_prompt_spec
from clipft.reporting.tables import markdown_table

HERE = Path(__file__).resolve().parent
FASHION = HERE.parent.parent / "shared" / "data" / "fashion" / "styles.csv"


def named_colours(title: str, colours: list[str]) -> set[str]:
    """The colours a title names, longest names first and each span counted once."""
    named, text = set(), f" {title.lower()} "
    for colour in sorted(colours, key=len, reverse=True):
        pattern = rf"\b{re.escape(colour.lower())}\b"
        if re.search(pattern, text):
            named.add(colour)
            text = re.sub(pattern, " ", text)
    return named


def colour_errors(predictions: pd.DataFrame, styles: pd.DataFrame, colours: list[str]) -> tuple[dict, pd.DataFrame]:
    """Totals (accuracy, errors, how often titles name the label or the prediction) and the
    confused pairs, most frequent first."""
    rows = predictions[["id", "color"]].merge(styles[["id", "baseColour", "productDisplayName"]], on="id")
    rows = rows[rows["baseColour"].isin(colours)]
    wrong = rows[rows["color"] != rows["baseColour"]]
    named = [named_colours(t, colours) for t in wrong["productDisplayName"]]
    totals = {"products": len(rows), "accuracy": round(1 - len(wrong) / len(rows), 3), "errors": len(wrong),
              "title names the catalogue's colour": round(sum(c in n for c, n in zip(wrong["baseColour"], named)) / len(wrong), 3),
              "title names the predicted colour": round(sum(c in n for c, n in zip(wrong["color"], named)) / len(wrong), 3)}
    pairs = wrong.apply(lambda r: " / ".join(sorted([r["baseColour"], r["color"]])), axis=1).value_counts()
    table = pd.DataFrame({"colours confused": pairs.index, "errors": pairs.values,
                          "share of errors": (pairs.values / len(wrong)).round(3)})
    return totals, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default=str(HERE / ".work" / "photos_only" / "multi-scale" / "finetune"))
    parser.add_argument("--top", type=int, default=10, help="how many confused pairs to list")
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args()
    predictions = pd.read_csv(Path(args.run) / "test" / "predictions.csv", dtype={"id": str})
    styles = pd.read_csv(FASHION, dtype={"id": str}, on_bad_lines="skip")
    totals, pairs = colour_errors(predictions, styles, list(load_prompt_spec("color").classes))
    with atomic_write(Path(args.out) / "colour_errors.md") as f:
        f.write("Colour errors of the photos-only fine-tuned run on the fashion test split "
                f"(`python benchmarks/colour_errors.py`):\n\n{markdown_table(pd.DataFrame([totals]))}\n"
                f"{markdown_table(pairs.head(args.top))}\n")


if __name__ == "__main__":
    main()
