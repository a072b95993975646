"""Which products to label first: random selection against the strategies of `clipft suggest`
(clipft/active.py), from zero labels, in rounds.

    python benchmarks/active_labelling.py --cache-dir /tmp/cache

Features: the offline model lite0-minilm with its pretrained towers (not aligned: zero-shot is
near chance, so the first round has no useful model, as a new catalogue has none), photos only,
through the embedding cache. Each round a strategy picks products from the pool; a person
labels every attribute of them (here: the catalogue's labels); a logistic-regression probe per
attribute (`clipft.probe.fit_probe`) is fitted on all labels so far and scored on a held-out test
split, and its calibrated-free probabilities feed the next round's uncertainty.

Catalogues: the generated one (`clipft sample-data`, --n products; color, sleeve, lid) and, when
../shared/data/fashion exists, a seeded sample of the fashion catalogue (gender, category (top
20), color (top 15), season), split by near-duplicate group. Writes
benchmarks/results/active_labelling.{csv,md,png}.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupShuffleSplit

from clipft.active import Pool, select
from clipft.applicability import applies, training_labels
from clipft.catalogue import CatalogueSource
from clipft.commands.errors import quiet_transformers
from clipft.commands.sample_data import make_catalogue
from clipft.fileio import atomic_write, write_json
from clipft.fusion import batched_parts
from clipft.labeller import Labeller
from clipft.probe import fit_probe, probe_matrix
from clipft.reporting.plots import save_figure, subplots
from clipft.reporting.tables import markdown_table

HERE = Path(__file__).resolve().parent
FASHION = HERE.parent.parent / "shared" / "data" / "fashion"
STRATEGIES = ("random", "margin", "balanced", "coreset", "typiclust", "badge", "weighted")


def prepare(name: str, source: CatalogueSource, prompts: list[str], cache_dir: str | None, seed: int = 0) -> dict:
    """Features, labels, zero-shot probabilities and a pool / test split of one catalogue."""
    labeller = Labeller.from_prompts(prompts, "lite0-minilm", None, "cpu", cache_dir, inputs="image")
    catalogue = source.load()
    features, rows, _, _ = labeller.catalogue_features(catalogue, skip_bad=True, progress=False)
    x = probe_matrix(batched_parts(features, rows, 256), "image")
    specs = [h.spec for h in labeller.heads.values()]
    labels = {s.attribute: training_labels(s, specs, catalogue.frame)[rows] for s in specs}
    zero_shot = labeller.proba_from_logits(labeller.logits(features, rows))
    groups = _groups(catalogue, rows)
    pool, test = next(GroupShuffleSplit(1, test_size=0.3, random_state=seed).split(x, groups=groups))
    frame = catalogue.frame.iloc[rows].reset_index(drop=True)
    return {"name": name, "x": x, "labels": labels, "zero_shot": zero_shot, "pool": pool, "test": test,
            "specs": specs, "frame": frame}


def _groups(catalogue, rows) -> np.ndarray:
    path = Path(catalogue.source).parent / "groups.csv"
    ids = np.asarray(catalogue.ids, dtype=object)[rows]
    if not path.is_file():
        return np.arange(len(rows))
    group = pd.read_csv(path, dtype=str).set_index("id")["group"]
    return np.array([group.get(i, f"own-{i}") for i in ids], dtype=object)


def fit_attribute(x, y, labelled, seed):
    """A probe on the labelled products that have this attribute (None: it does not apply)."""
    have = labelled[np.array([v is not None for v in y[labelled]], dtype=bool)]
    classes = sorted({str(v) for v in y[have]})
    if len(classes) < 2:
        return classes[0] if classes else None
    targets = y[have].astype(str)
    return fit_probe("logistic", x[have], targets, x[have], targets, seed)[0]


def probe_accuracy(model, x, y, test) -> float:
    scored = test[np.array([v is not None for v in y[test]], dtype=bool)]
    if model is None or not len(scored):
        return float("nan")
    predicted = np.full(len(scored), model, dtype=object) if isinstance(model, str) else model.predict(x[scored])
    return float(np.mean(predicted == y[scored].astype(str)))


def pool_state(data: dict, models: dict, unlabelled: np.ndarray, labelled: np.ndarray) -> Pool:
    """What a strategy sees: the current probes' probabilities (zero-shot before any label)."""
    x = data["x"]
    proba = {}
    for attribute, model in models.items():
        if model is None:
            proba[attribute] = data["zero_shot"][attribute][unlabelled]
        elif isinstance(model, str):
            proba[attribute] = np.ones((len(unlabelled), 1))
        else:
            proba[attribute] = model.predict_proba(x[unlabelled])
    predicted = {a: (np.full(len(unlabelled), m, dtype=object) if isinstance(m, str) else
                     m.predict(x[unlabelled]) if m is not None else np.full(len(unlabelled), None, dtype=object))
                 for a, m in models.items()}
    applying = applies(data["specs"], data["frame"], unlabelled, predicted)
    return Pool(x[unlabelled], proba, applying, x[labelled])


def run_strategy(data: dict, strategy: str, budgets: list[int], seed: int) -> list[dict]:
    """Rounds up to each budget (products labelled so far), test accuracy per attribute after each."""
    labelled = np.zeros(0, dtype=int)
    models = {a: None for a in data["labels"]}
    records = []
    for budget in budgets:
        unlabelled = np.setdiff1d(data["pool"], labelled)
        pool = pool_state(data, models, unlabelled, labelled)
        picks = unlabelled[select(strategy, pool, budget - len(labelled), seed + budget)]
        labelled = np.concatenate([labelled, picks])
        for attribute, y in data["labels"].items():
            models[attribute] = fit_attribute(data["x"], y, labelled, seed)
            have = [v for v in y[labelled] if v is not None]
            records.append({"catalogue": data["name"], "strategy": strategy, "seed": seed, "labelled": len(labelled),
                            "attribute": attribute, "classes_seen": len(set(have)),
                            "accuracy": probe_accuracy(models[attribute], data["x"], y, data["test"])})
    return records


def summarise(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean test accuracy over seeds and attributes per (catalogue, strategy, labelled)."""
    per = frame.groupby(["catalogue", "strategy", "labelled", "attribute"], as_index=False)["accuracy"].mean()
    wide = per.pivot_table(index=["catalogue", "labelled", "attribute"], columns="strategy", values="accuracy")
    return wide.reindex(columns=[s for s in STRATEGIES if s in wide.columns]).reset_index()


def labels_to_match_random(frame: pd.DataFrame) -> pd.DataFrame:
    """Per catalogue, attribute and strategy: for each budget B, the fewest products (of the budgets
    run) with which the strategy's mean accuracy reaches random's at B ('-' when none does)."""
    mean = frame.groupby(["catalogue", "attribute", "strategy", "labelled"])["accuracy"].mean()
    rows = []
    for (catalogue, attribute), group in mean.groupby(level=["catalogue", "attribute"]):
        curves = {s: g.droplevel(["catalogue", "attribute", "strategy"]) for s, g in group.groupby(level="strategy")}
        for strategy, curve in curves.items():
            if strategy == "random":
                continue
            row = {"catalogue": catalogue, "attribute": attribute, "strategy": strategy}
            for budget, accuracy in curves["random"].items():
                reached = curve[curve >= accuracy - 1e-12]
                row[f"random@{budget}"] = str(int(reached.index.min())) if len(reached) else "-"
            rows.append(row)
    return pd.DataFrame(rows)


def plot(frame: pd.DataFrame, path: Path) -> None:
    panels = frame[["catalogue", "attribute"]].drop_duplicates().to_numpy().tolist()
    fig, axes = subplots(1, len(panels), figsize=(3.2 * len(panels), 3), squeeze=False)
    for ax, (catalogue, attribute) in zip(axes[0], panels):
        mine = frame[(frame["catalogue"] == catalogue) & (frame["attribute"] == attribute)]
        for strategy, lines in mine.groupby("strategy", sort=False):
            mean = lines.groupby("labelled")["accuracy"].mean()
            ax.plot(mean.index, mean.to_numpy(), marker="o", ms=3, label=strategy,
                    lw=2.2 if strategy == "random" else 1.2, color="black" if strategy == "random" else None)
        ax.set_xscale("log", base=2)
        ax.set_title(f"{catalogue}: {attribute}", fontsize=9)
        ax.set_xlabel("products labelled")
    axes[0][0].set_ylabel("test accuracy (probe)")
    axes[0][-1].legend(fontsize=7)
    save_figure(fig, path)


def catalogues(args) -> list[dict]:
    work, found = Path(args.work), []
    if args.n > 0:
        sample = make_catalogue(work / "sample", n=args.n, size=96, seed=0)
        found.append(prepare("generated", CatalogueSource(str(sample)), ["color", "sleeve", "lid"], args.cache_dir))
    if FASHION.joinpath("styles.csv").is_file() and args.fashion > 0:
        source = CatalogueSource(str(FASHION / "styles.csv"), limit=args.fashion, seed=0, skip_bad=True)
        found.append(prepare("fashion", source, ["gender", "category", "color", "season"], args.cache_dir))
    return found


def measure(args) -> pd.DataFrame:
    """Every strategy's rounds on every catalogue and seed, into ``out``/``out_name``.csv."""
    started = time.perf_counter()
    budgets, seeds = [int(b) for b in args.budgets.split(",")], [int(s) for s in args.seeds.split(",")]
    records = []
    for data in catalogues(args):
        print(f"{data['name']}: {len(data['pool'])} pool, {len(data['test'])} test ({time.perf_counter() - started:.0f}s)",
              flush=True)
        for strategy in args.strategies.split(","):
            records += [r for seed in seeds for r in run_strategy(data, strategy, budgets, seed)]
            print(f"  {strategy} ({time.perf_counter() - started:.0f}s)", flush=True)
    frame = pd.DataFrame(records)
    with atomic_write(Path(args.out) / f"{args.out_name}.csv") as f:
        frame.to_csv(f, index=False)
    return frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=600, help="generated products (0: skip)")
    parser.add_argument("--fashion", type=int, default=1000, help="fashion products sampled (0: skip)")
    parser.add_argument("--budgets", default="8,16,32,64,128", help="products labelled after each round")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--work", default=str(HERE / ".work" / "active_labelling"))
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--out-name", default="active_labelling", help="results file name, without extension")
    parser.add_argument("--report-only", action="store_true", help="rewrite the .md and .png from the .csv")
    args = parser.parse_args()
    quiet_transformers()
    started = time.perf_counter()
    out = Path(args.out)
    frame = pd.read_csv(out / f"{args.out_name}.csv") if args.report_only else measure(args)
    seconds = time.perf_counter() - started
    timing = Path(args.work) / f"{args.out_name}.json"
    if args.report_only and timing.is_file():  # the measuring run's time
        seconds = json.loads(timing.read_text())["wall_seconds"]
    with atomic_write(out / f"{args.out_name}.md") as f:
        f.write(f"Test accuracy of a logistic probe per attribute (mean of seeds {args.seeds}) after each round; "
                f"`python benchmarks/active_labelling.py {' '.join(a for a in sys.argv[1:] if a != '--report-only')}`"
                f", {seconds:.0f} s.\n\n" + markdown_table(summarise(frame))
                + "\n\nProducts each strategy needs to reach random selection's accuracy at each budget "
                "('-': not within the budgets run):\n\n" + markdown_table(labels_to_match_random(frame)) + "\n")
    plot(frame, out / f"{args.out_name}.png")
    if not args.report_only:
        write_json(Path(args.work) / f"{args.out_name}.json", {"command": " ".join(sys.argv), "wall_seconds": round(seconds, 1)})
    print(summarise(frame).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"{seconds:.0f}s; results in {out}/{args.out_name}.*")


if __name__ == "__main__":
    main()
