"""What titles are worth, and what happens when they are missing: text-only, image-only and
fused models, zero-shot, linear probe, and fine-tuned without and with title dropout, each
scored on the test split with titles present and with titles removed.

    python benchmarks/title_ablation.py --set cache_dir=/tmp/cache

Starts from the aligned offline model (`clipft align --config
benchmarks/configs/align-fashion.yaml --out runs/align-lite0-minilm`) and reuses its split
(group-aware; no test product was seen in alignment). Every fine-tuning run is `clipft finetune
--config benchmarks/configs/titles-fashion.yaml` with `inputs` and `title_dropout` set; the probe is `clipft probe` (logistic regression) on the same config. Runs are kept under
benchmarks/.work/title_ablation/ and are not repeated; results go to
benchmarks/results/title_ablation.{csv,md,png}.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd  # noqa: E402

from clipft.training.config import load_config  # noqa: E402
from clipft.fileio import atomic_write  # noqa: E402
from clipft.commands.finetune import run_finetune  # noqa: E402
from clipft.reporting.plots import save_figure, subplots  # noqa: E402
from clipft.commands.probe import run_probe  # noqa: E402
from clipft.reporting.tables import markdown_table  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
METHODS = ("zero-shot", "linear probe", "fine-tuned", "fine-tuned + title dropout")
INPUTS = ("text", "image", "fusion")
# fine-tuning runs: name -> (inputs, title dropout)
RUNS = {"image": ("image", 0.0), "text": ("text", 0.0), "text-dropout": ("text", 0.5),
        "fusion": ("fusion", 0.0), "fusion-dropout": ("fusion", 0.5)}


def finetune_rows(name: str, inputs: str, dropout: float, comparison: pd.DataFrame) -> list[dict]:
    rows = []
    for record in comparison.to_dict("records"):
        base, removed = record["model"], record["titles"] == "removed"
        if base == "fine-tuned":
            method = "fine-tuned + title dropout" if dropout else "fine-tuned"
        elif base == "zero-shot" and not dropout:
            method = "zero-shot"
        else:
            continue
        titles = ["removed"] if removed else ["present", "removed"] if inputs == "image" else ["present"]
        for t in titles:  # an image-only model does not read titles: removing them changes nothing
            rows.append({"attribute": record["attribute"], "method": method, "inputs": inputs, "titles": t,
                         "accuracy": record["accuracy"], "macro_f1": record["macro_f1"], "run": name})
        if inputs == "image" and base == "fine-tuned":  # and title dropout cannot change it either
            rows += [dict(r, method="fine-tuned + title dropout") for r in rows[-len(titles):]]
    return rows


def plot(results: pd.DataFrame, path: Path) -> None:
    attributes = list(dict.fromkeys(results["attribute"]))
    fig, axes = subplots(1, len(attributes), figsize=(4.2 * len(attributes), 4.2), sharey=True)
    for ax, attribute in zip(axes, attributes):
        sub = results[results["attribute"] == attribute]
        labels, present, removed = [], [], []
        for method in METHODS:
            for inputs in INPUTS:
                cell = sub[(sub["method"] == method) & (sub["inputs"] == inputs)].set_index("titles")["accuracy"]
                labels.append(f"{method}, {inputs}")
                present.append(cell.get("present", float("nan")))
                removed.append(cell.get("removed", float("nan")))
        x = range(len(labels))
        ax.bar([i - 0.2 for i in x], present, width=0.4, label="titles present")
        ax.bar([i + 0.2 for i in x], removed, width=0.4, label="titles removed")
        ax.set_xticks(list(x), labels, rotation=90, fontsize=7)
        ax.set_title(attribute)
        ax.set_ylim(0, 1)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("test accuracy")
    axes[0].legend(loc="lower left", fontsize=8)
    save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(HERE / "configs" / "titles-fashion.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config overrides for every run (e.g. cache_dir=...)")
    parser.add_argument("--work", default=str(HERE / ".work" / "title_ablation"))
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args()
    work, out = Path(args.work), Path(args.out)

    rows = []
    for name, (inputs, dropout) in RUNS.items():
        folder = work / name
        if not (folder / "comparison.csv").is_file():
            print(f"== fine-tuning on {inputs}, title dropout {dropout}", flush=True)
            cfg = load_config(args.config, [*args.overrides, f"inputs={inputs}", f"title_dropout={dropout}"])
            run_finetune(cfg, folder, progress=False)
        rows += finetune_rows(name, inputs, dropout, pd.read_csv(folder / "comparison.csv"))
    if not (work / "probe" / "probe.csv").is_file():
        print("== linear probe", flush=True)
        run_probe(load_config(args.config, args.overrides), work / "probe", ("logistic",), INPUTS,
                  progress=False)
    for record in pd.read_csv(work / "probe" / "probe.csv").to_dict("records"):
        rows.append({"attribute": record["attribute"], "method": "linear probe", "inputs": record["inputs"],
                     "titles": record["titles"], "accuracy": record["accuracy"], "macro_f1": record["macro_f1"],
                     "run": "probe"})

    results = pd.DataFrame(rows)
    with atomic_write(out / "title_ablation.csv") as f:
        results.to_csv(f, index=False)
    table = results.pivot_table(index=["method", "inputs"], columns=["attribute", "titles"], values="accuracy", sort=False)
    table = table.reindex([(m, i) for m in METHODS for i in INPUTS])
    with atomic_write(out / "title_ablation.md") as f:
        f.write(f"Test accuracy (titles present / removed), command: `python benchmarks/title_ablation.py "
                f"{' '.join(sys.argv[1:])}`\n\n")
        f.write(markdown_table(table))
    plot(results, out / "title_ablation.png")
    print(table.to_string(float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
