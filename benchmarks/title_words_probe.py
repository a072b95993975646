"""Why lite0-minilm's text tower has a bag of title words (clipft/title_words.py): how much each
attribute can be read off the words of a title, by a logistic regression on TF-IDF of its words
and word pairs, on the developers' fashion split (train on train, C chosen on validation, scored
on test). Compare with the probe on MiniLM's pooled output in title_ablation.md ("linear probe,
text" rows).

    python benchmarks/title_words_probe.py

Needs ../shared/data/fashion and the aligned model's split (runs/align-lite0-minilm/splits.csv).
Results: benchmarks/results/title_words_probe.md.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from clipft.fileio import atomic_write
from clipft.reporting.tables import markdown_table

HERE = Path(__file__).resolve().parent
FASHION = HERE.parent.parent / "shared" / "data" / "fashion" / "styles.csv"
ATTRIBUTES = {"gender": "gender", "season": "season", "baseColour (all values)": "baseColour"}


def accuracy(frame: pd.DataFrame, column: str) -> dict:
    """Validation-chosen C, and validation and test accuracy, of TF-IDF words and pairs."""
    data = frame.dropna(subset=[column, "productDisplayName"])
    parts = {name: data[data["split"] == name] for name in ("train", "val", "test")}
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit(parts["train"]["productDisplayName"])
    x = {name: vectorizer.transform(part["productDisplayName"]) for name, part in parts.items()}
    fits = {c: LogisticRegression(C=c, max_iter=3000).fit(x["train"], parts["train"][column]) for c in (1, 3, 10, 30)}
    best = max(fits, key=lambda c: fits[c].score(x["val"], parts["val"][column]))
    return {"C": best, "val_accuracy": fits[best].score(x["val"], parts["val"][column]),
            "test_accuracy": fits[best].score(x["test"], parts["test"][column]), "test_products": len(parts["test"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--splits", default="runs/align-lite0-minilm/splits.csv")
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args()
    frame = pd.read_csv(FASHION, on_bad_lines="skip").merge(pd.read_csv(args.splits)[["id", "split"]], on="id")
    table = pd.DataFrame([{"attribute": name, **accuracy(frame, column)} for name, column in ATTRIBUTES.items()])
    with atomic_write(Path(args.out) / "title_words_probe.md") as f:
        f.write("Logistic regression on TF-IDF of title words and word pairs, fashion split "
                f"(`python benchmarks/title_words_probe.py`):\n\n{markdown_table(table)}\n")
    print(markdown_table(table))


if __name__ == "__main__":
    main()
