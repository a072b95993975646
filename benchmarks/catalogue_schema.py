"""Real catalogues on the fashion test split (issue 22): articleType over all its values, the
'none of these' class on category and colour, and the category tree, photos only and with titles.

    python benchmarks/catalogue_schema.py --set cache_dir=/tmp/cache

Starts from the aligned offline model (`clipft align --config
benchmarks/configs/align-fashion.yaml --out runs/align-lite0-minilm`) and its split. Each run is
`clipft finetune` with benchmarks/configs/photos-fashion.yaml (photos only; the image trunk fully
locked here, `unlocked_image_groups=0 epochs=20`, the cached fast path of photos_only.py's
frozen-trunk row) or benchmarks/configs/titles-fashion.yaml (photo + title fused, title
dropout 0.5), with its own prompt files (RUNS), then `clipft predict` on the test split at the
default 0.95 precision target:

- listed: category (articleType top 20) and color (baseColour top 15), as shipped;
- other: the same with `other: Other` (benchmarks/prompts/*_other.yaml);
- tree: article_type, every articleType under the shipped taxonomy 'fashion';
- flat: the same 113 articleTypes without the tree, masterCategory and subCategory as flat
  attributes of their own (what a catalogue team would train without a taxonomy).

Runs are kept under benchmarks/.work/catalogue_schema/ and are not repeated; results go to
benchmarks/results/catalogue_schema.{csv,md} (ids and values only, no photos or embeddings).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd
from review_audit import TARGET_PRECISION, split_csv  # benchmarks/ is the script's folder

from clipft.calibration import GUARANTEE
from clipft.catalogue import CatalogueSource
from clipft.commands.finetune import run_finetune
from clipft.commands.predict import run_predict
from clipft.fileio import atomic_write
from clipft.prompts import load_prompt_spec
from clipft.reporting.tables import markdown_table
from clipft.scoring import EncodeOptions
from clipft.taxonomy import load_taxonomy
from clipft.training.config import load_config

HERE = Path(__file__).resolve().parent
PROMPTS = HERE / "prompts"
# inputs -> (recipe, its overrides here)
RECIPES = {"photos only": (HERE / "configs" / "photos-fashion.yaml", ["unlocked_image_groups=0", "epochs=20"]),
           "photo + title": (HERE / "configs" / "titles-fashion.yaml", [])}
RUNS = {"listed": ["category", "color"],
        "other": [str(PROMPTS / "category_other.yaml"), str(PROMPTS / "color_other.yaml")],
        "tree": ["article_type"],
        "flat": [str(PROMPTS / "article_type_flat.yaml"), "master_category", str(PROMPTS / "sub_category.yaml")]}


def trained_and_predicted(config: Path, overrides: list[str], prompts: list[str], folder: Path, test: Path) -> Path:
    """The run (trained once) and its `clipft predict` of the test split; returns the predict folder."""
    cfg = load_config(config, [*overrides, f"prompts=[{', '.join(prompts)}]"])
    if not (folder / "labeller.json").is_file():
        print(f"== fine-tuning {folder}", flush=True)
        run_finetune(cfg, folder, progress=False)
    predicted = folder.parent / f"{folder.name}-predict"
    if not (predicted / "metrics.json").is_file():
        # Thresholds refitted with today's rule, whatever rule the run was trained under.
        run_predict(folder, CatalogueSource(str(test)), predicted, EncodeOptions(cache_dir=cfg.runtime.cache_dir),
                    target_precision=TARGET_PRECISION, guarantee=GUARANTEE, progress=False)
    return predicted


def labelled(predicted: Path, test: pd.DataFrame, attribute: str, prompt: str) -> pd.DataFrame:
    """predictions.csv of one attribute beside the catalogue's value and the label it stands for
    (with `other`, a value outside the classes is Other; without, it is out of list and no class)."""
    spec = load_prompt_spec(prompt)
    frame = pd.read_csv(predicted / "predictions.csv", dtype={"id": str}, keep_default_na=False)
    frame = frame.merge(test[["id", spec.column]].rename(columns={spec.column: "value"}), on="id")
    frame = frame[frame["value"].str.strip() != ""]
    frame["outside"] = ~frame["value"].isin([c for c in spec.classes if c != spec.other])
    frame["truth"] = spec.catalogue_labels(frame["value"])
    frame["correct"] = frame[attribute] == frame["truth"]
    frame["auto"] = frame[f"{attribute}_status"] == "auto"
    return frame


def attribute_metrics(predicted: Path) -> dict:
    """metrics.json of a predict folder: attribute -> its metrics."""
    return json.loads((predicted / "metrics.json").read_text())["attributes"]


def other_rows(inputs: str, work: Path, test: pd.DataFrame) -> tuple[list[dict], list[dict]]:
    """Per attribute, with and without `other`: out-of-list products caught, in-list ones sent to
    Other, and how many auto-accepted labels are of out-of-list products (named when any)."""
    rows, named = [], []
    for run, prompts in (("listed", RUNS["listed"]), ("other", RUNS["other"])):
        metrics = attribute_metrics(work / f"{run}-predict")
        for attribute, prompt in zip(("category", "color"), prompts):
            frame = labelled(work / f"{run}-predict", test, attribute, prompt)
            auto, outside = frame[frame["auto"]], frame[frame["outside"]]
            other = metrics[attribute].get("other", {})
            rows.append({"inputs": inputs, "attribute": attribute, "other": run == "other", "products": len(frame),
                         "out_of_list": len(outside), "caught_share": other.get("caught_share"),
                         "in_list_called_other_share": other.get("in_list_called_other_share"),
                         "auto": len(auto), "auto_out_of_list": int(auto["outside"].sum()),
                         "auto_precision": auto["correct"].mean(), "coverage": len(auto) / len(frame),
                         "accuracy_all_products": frame["correct"].mean()})
            if run == "other":
                if other["auto_out_of_list"] != rows[-1]["auto_out_of_list"]:
                    raise SystemExit(f"{work / 'other-predict'}: metrics.json's auto_out_of_list for {attribute} "
                                     f"disagrees with predictions.csv")
                named.append(auto[auto["outside"]].assign(inputs=inputs, attribute=attribute)
                             .rename(columns={attribute: "auto_label"}))
    return rows, named_few(named)


def named_few(frames: list[pd.DataFrame]) -> list[dict]:
    """The out-of-list products auto-accepted under a listed class, by catalogue value and label."""
    frame = pd.concat(frames)
    groups = frame.groupby(["inputs", "attribute", "value", "auto_label"], sort=False)["id"]
    table = groups.agg(products="size", ids=" ".join).reset_index()
    return table.sort_values(["attribute", "products"], ascending=[True, False], kind="stable").to_dict("records")


def consistent(frame: pd.DataFrame, leaf: str, master: str, sub: str, taxonomy) -> float:
    """Share of products whose predicted masterCategory and subCategory are the predicted leaf's ancestors."""
    paths = frame[leaf].map(taxonomy.paths)
    return float(((paths.str[0] == frame[master]) & (paths.str[1] == frame[sub])).mean())


def tree_rows(inputs: str, work: Path, test: pd.DataFrame) -> tuple[dict, dict]:
    """articleType over every value (tree and flat) beside the top-20 category, and the tree's levels."""
    taxonomy = load_taxonomy("fashion")
    tree, flat = (attribute_metrics(work / f"{run}-predict") for run in ("tree", "flat"))
    listed = attribute_metrics(work / "listed-predict")["category"]
    leaves = labelled(work / "tree-predict", test, "article_type", "article_type")
    flat_leaves = labelled(work / "flat-predict", test, "article_type", RUNS["flat"][0])
    top20 = leaves["value"].isin(load_prompt_spec("category").classes).to_numpy()
    article = {"inputs": inputs, "article_type_n": tree["article_type"]["n"],
               "tree_accuracy": tree["article_type"]["accuracy"], "tree_macro_f1": tree["article_type"]["macro_f1"],
               "flat_accuracy": flat["article_type"]["accuracy"], "flat_macro_f1": flat["article_type"]["macro_f1"],
               "tree_accuracy_on_top20": leaves.loc[top20, "correct"].mean(),
               "category_top20_n": listed["n"], "category_top20_accuracy": listed["accuracy"],
               "category_top20_macro_f1": listed["macro_f1"]}
    levels = tree["article_type"]["levels"]
    frame = leaves.merge(flat_leaves[["id", "article_type"]], on="id", suffixes=("", "_flat"))
    frame = frame.merge(pd.read_csv(work / "flat-predict" / "predictions.csv", dtype=str,
                                    usecols=["id", "master_category", "sub_category"]), on="id")
    top = frame["article_type_top3"].str.split(":").str[0]  # the leaf posterior's argmax: the flat reading of the run
    tree_row = {"inputs": inputs, "tree_leaf_is_leaf_argmax": float((top == frame["article_type"]).mean()),
                "tree_consistent": consistent(frame, "article_type", "article_type_master_category",
                                              "article_type_sub_category", taxonomy),
                "flat_consistent": consistent(frame, "article_type_flat", "master_category", "sub_category", taxonomy),
                "tree_leaf_accuracy": tree["article_type"]["accuracy"],
                "flat_leaf_accuracy": flat["article_type"]["accuracy"],
                "tree_master_accuracy": levels["master_category"]["accuracy"],
                "flat_master_accuracy": flat["master_category"]["accuracy"],
                "tree_sub_accuracy": levels["sub_category"]["accuracy"],
                "flat_sub_accuracy": flat["sub_category"]["accuracy"]}
    return article, tree_row


def measure(args, work: Path) -> dict[str, pd.DataFrame]:
    first = load_config(RECIPES["photos only"][0], args.overrides)
    test_csv = split_csv(first.catalogue.data, Path(first.split.splits_from), work / "test.csv")
    test = pd.read_csv(test_csv, dtype=str, keep_default_na=False)
    tables = {"articleType": [], "other": [], "auto out-of-list": [], "tree": []}
    for inputs, (config, overrides) in RECIPES.items():
        folder = work / inputs.replace(" ", "").replace("+", "-")
        for run, prompts in RUNS.items():
            trained_and_predicted(config, [*args.overrides, *overrides], prompts, folder / run, test_csv)
        rows, named = other_rows(inputs, folder, test)
        article, tree = tree_rows(inputs, folder, test)
        tables["articleType"].append(article)
        tables["other"] += rows
        tables["auto out-of-list"] += named
        tables["tree"].append(tree)
    return {name: pd.DataFrame(rows) for name, rows in tables.items()}


# what each table holds, for catalogue_schema.md
CAPTIONS = {
    "articleType": "articleType over all its values (113 classes, all 1,482 test products): the tree run, and the "
                   "flat run (the same classes without the tree); tree_accuracy_on_top20 is the tree run on the "
                   "products whose articleType is one of category's 20, beside the category run (top 20) on them",
    "other": "`other: Other` on category (top 20) and colour (top 15), and without it (the shipped files), on every "
             "test product with a value; auto_out_of_list: auto-accepted labels of products whose value is not "
             "listed (always wrong); auto_precision and accuracy_all_products count those as wrong",
    "auto out-of-list": "The out-of-list products auto-accepted with `other` (catalogue value, the label given, test ids)",
    "tree": "The tree run against the flat run: tree_leaf_is_leaf_argmax, the share of the tree's leaves that are the "
            "argmax of the same run's leaf posterior (the run read without its tree); the share of predictions whose masterCategory and subCategory are the "
            "predicted articleType's ancestors in the taxonomy, and accuracy per level (the tree's from metrics.json "
            "`levels`, the flat run's from its own heads)",
}


def training_seconds(work: Path) -> float:
    """Seconds spent training every run (their history.csv), however many invocations it took."""
    return sum(pd.read_csv(path)["seconds"].sum() for path in work.glob("*/*/history.csv"))


def write(tables: dict[str, pd.DataFrame], out: Path, commands: list[str], seconds: float) -> None:
    with atomic_write(out / "catalogue_schema.csv") as f:
        frame = pd.concat([t.assign(table=name) for name, t in tables.items()]).assign(command=commands[-1])
        frame[["table", *frame.columns.drop("table")]].to_csv(f, index=False)
    with atomic_write(out / "catalogue_schema.md") as f:
        f.write(f"Fashion test split (`benchmarks/catalogue_schema.py`), fine-tuned runs (photos only: "
                f"photos-fashion.yaml with the image trunk fully locked; photo + title: titles-fashion.yaml; "
                f"{seconds:.0f} s of training in all on 2 CPU cores) labelling it with `clipft predict` at the "
                f"0.95 precision target. Commands:\n\n" + "".join(f"    {c}\n" for c in commands) + "\n")
        for name, table in tables.items():
            f.write(f"{CAPTIONS[name]}:\n\n{markdown_table(table.round(3)) if len(table) else '(none)'}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config overrides for every run (e.g. cache_dir=...)")
    parser.add_argument("--work", default=str(HERE / ".work" / "catalogue_schema"))
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    tables = measure(args, work)
    overrides = "".join(f" --set {o}" for o in args.overrides)
    commands = [f"clipft align --config benchmarks/configs/align-fashion.yaml --out runs/align-lite0-minilm{overrides}",
                f"python benchmarks/catalogue_schema.py {' '.join(sys.argv[1:])}"]
    write(tables, Path(args.out), commands, training_seconds(work))
    for name, table in tables.items():
        print(f"{name}:\n{table.to_string(index=False, float_format=lambda v: f'{v:.3f}')}\n")


if __name__ == "__main__":
    main()
