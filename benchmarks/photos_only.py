"""Photos only, all labels: the fine-tuned model against a logistic-regression probe on the
fashion test split, per attribute (gender, articleType top 20, baseColour top 15, season).

    python benchmarks/photos_only.py --set cache_dir=/tmp/cache [--name NAME --set key=value ...]

Both start from the aligned offline model (`clipft align --config
benchmarks/configs/align-fashion.yaml --out runs/align-lite0-minilm`) and its split.
Fine-tuning is `clipft finetune --config benchmarks/configs/photos-fashion.yaml` (one model for
the four attributes); the probe is `clipft probe` (logistic regression, `C` chosen on validation) on
the same config. Runs are kept under benchmarks/.work/photos_only/NAME and are not repeated;
results are added to benchmarks/results/photos_only.{csv,md} under NAME.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from clipft.commands.finetune import run_finetune
from clipft.commands.probe import run_probe
from clipft.fileio import atomic_write
from clipft.reporting.tables import markdown_table
from clipft.training.config import load_config

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
ATTRIBUTES = ("gender", "category", "color", "season", "mean")


def measure(config: str, overrides: list[str], work: Path) -> pd.DataFrame:
    """Test accuracy of the fine-tuned model and of the probe, one row per attribute."""
    if not (work / "finetune" / "comparison.csv").is_file():
        run_finetune(load_config(config, overrides), work / "finetune", progress=False)
    if not (work / "probe" / "probe.csv").is_file():
        run_probe(load_config(config, overrides), work / "probe", ("logistic",), ("image",), progress=False)
    comparison = pd.read_csv(work / "finetune" / "comparison.csv")
    probe = pd.read_csv(work / "probe" / "probe.csv")
    tuned = comparison[(comparison["model"] == "fine-tuned") & (comparison["titles"] == "present")]
    zero = comparison[(comparison["model"] == "zero-shot") & (comparison["titles"] == "present")]
    probe = probe[probe["titles"] == "present"]
    table = pd.DataFrame({"zero-shot": zero.set_index("attribute")["accuracy"],
                          "linear probe": probe.set_index("attribute")["accuracy"],
                          "fine-tuned": tuned.set_index("attribute")["accuracy"]})
    table.loc["mean"] = table.mean()
    table["fine-tuned - probe"] = table["fine-tuned"] - table["linear probe"]
    return table.rename_axis("attribute").reset_index()


def summary(results: pd.DataFrame) -> pd.DataFrame:
    """One row per variant (fine-tuned accuracy per attribute and mean), after the zero-shot and
    probe rows of the first variant (every variant starts from the same model and split)."""
    wide = results.pivot_table(index="variant", columns="attribute", values="fine-tuned", sort=False)
    first = results[results["variant"] == results["variant"].iloc[0]].set_index("attribute")
    reference = pd.DataFrame([first["zero-shot"], first["linear probe"]], index=["zero-shot", "linear probe"])
    columns = [a for a in ATTRIBUTES if a in first.index] + [a for a in first.index if a not in ATTRIBUTES]
    table = pd.concat([reference, wide.rename(index=lambda v: f"fine-tuned: {v}")])[columns]
    return table.rename_axis("model").reset_index()


def replace_variant(previous: pd.DataFrame, table: pd.DataFrame, name: str) -> pd.DataFrame:
    """``previous`` with variant ``name``'s rows replaced by ``table`` where they stood (a new
    variant goes last): the summary's zero-shot and probe rows stay those of the first variant."""
    order = list(dict.fromkeys([*previous["variant"], name]))
    results = pd.concat([previous[previous["variant"] != name], table], ignore_index=True)
    position = results["variant"].map(order.index)
    return results.iloc[position.argsort(kind="stable")].reset_index(drop=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(HERE / "configs" / "photos-fashion.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--name", default="multi-scale", help="the row label of this variant in the results")
    parser.add_argument("--work", default=str(HERE / ".work" / "photos_only"))
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args()
    table = measure(args.config, args.overrides, Path(args.work) / args.name)
    table.insert(0, "variant", args.name)
    table["command"] = f"python benchmarks/photos_only.py {' '.join(sys.argv[1:])}"
    path = Path(args.out) / "photos_only.csv"
    previous = pd.read_csv(path) if path.is_file() else pd.DataFrame(columns=table.columns)
    results = replace_variant(previous, table, args.name)
    with atomic_write(path) as f:
        results.to_csv(f, index=False)
    with atomic_write(Path(args.out) / "photos_only.md") as f:
        f.write("Test accuracy, photos only, trained on the whole train split (`benchmarks/photos_only.py`; "
                "commands in photos_only.csv)\n\n")
        f.write(markdown_table(summary(results).round(3)))
    print(table.drop(columns="command").to_string(float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
