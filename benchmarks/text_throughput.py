"""Title encoding throughput of the offline model with and without its bag of title words
(clipft/title_words.py): the whole text tower (tokenizer, MiniLM, projection, and the bag where
the model has one) on product titles, in titles per second.

    python benchmarks/text_throughput.py --n 2048

Uses the fashion titles in ../shared/data/fashion when present, else generated ones. Results go
to benchmarks/results/text_throughput.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
import torch

from clipft.fileio import atomic_write
from clipft.models import load_model
from clipft.offline_model import create_lite0_minilm
from clipft.reporting.tables import markdown_table

HERE = Path(__file__).resolve().parent
FASHION = HERE.parent.parent / "shared" / "data" / "fashion" / "styles.csv"


def titles(n: int) -> tuple[list[str], str]:
    if FASHION.is_file():
        frame = pd.read_csv(FASHION, on_bad_lines="skip")
        return frame["productDisplayName"].dropna().astype(str).tolist()[:n], "fashion titles"
    from clipft.commands.sample_data import make_catalogue
    import tempfile

    data = make_catalogue(Path(tempfile.mkdtemp()), n=n, size=8, seed=0)
    return pd.read_csv(data)["title"].astype(str).tolist(), "generated titles"


@torch.no_grad()
def titles_per_second(model, tokenizer, texts: list[str], batch_size: int, repeats: int) -> float:
    """The best of ``repeats`` passes over ``texts`` (the first warms up caches and allocators)."""
    best = float("inf")
    for _ in range(repeats + 1):
        started = time.perf_counter()
        for i in range(0, len(texts), batch_size):
            model.encode_text(tokenizer(texts[i : i + batch_size]))
        best = min(best, time.perf_counter() - started)
    return len(texts) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args()
    texts, source = titles(args.n)
    with_bag, _, tokenizer = load_model("lite0-minilm", "random")
    without_bag = create_lite0_minilm(from_checkpoint=True)[0].eval()
    rows = [{"model": "lite0-minilm, with the bag of title words", "titles_per_second":
             round(titles_per_second(with_bag.eval(), tokenizer, texts, args.batch_size, args.repeats), 1)},
            {"model": "lite0-minilm, without it", "titles_per_second":
             round(titles_per_second(without_bag, tokenizer, texts, args.batch_size, args.repeats), 1)}]
    table = pd.DataFrame(rows)
    meta = {"titles": len(texts), "source": source, "batch_size": args.batch_size, "threads": torch.get_num_threads(),
            "command": f"python benchmarks/text_throughput.py --n {args.n}"}
    out = Path(args.out)
    with atomic_write(out / "text_throughput.json") as f:
        json.dump({**meta, "rows": rows}, f, indent=2)
    with atomic_write(out / "text_throughput.md") as f:
        f.write(f"Title encoding throughput, {len(texts)} {source}, batch {args.batch_size}, torch threads "
                f"{meta['threads']}, best of {args.repeats}; `{meta['command']}`.\n\n{markdown_table(table)}\n")
    print(markdown_table(table))


if __name__ == "__main__":
    main()
