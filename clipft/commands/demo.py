"""The main job end to end, offline, on a catalogue that clipft draws itself:

1. draw products (t-shirts, mugs, pans) with titles and labels;
2. align the offline model ``lite0-minilm`` on photo-title pairs (captions = titles);
3. score the held-out test split zero-shot with the aligned model;
4. fine-tune on a few labels per class (bare-label captions) and compare;
5. label the held-out products with the fine-tuned run and show the review queue.

Fine-tuning reuses the alignment's group-aware split, so the test products are never trained on.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd

from ..catalogue import CatalogueSource
from ..fileio import atomic_write
from ..reporting.html_report import write_report
from ..reporting.plots import plot_comparison
from ..reporting.tables import model_label
from ..scoring import EncodeOptions
from ..training.config import CatalogueCfg, EvalCfg, FinetuneCfg, OptimCfg, RuntimeCfg, SplitCfg, TaskCfg, TowersCfg
from .finetune import run_finetune
from .predict import run_predict
from .sample_data import make_catalogue

PROMPTS = ("color", "colours", "sleeve", "lid")  # colours: several values on two-colour products


def demo_configs(data: Path, prompts_dir: Path | None, seed: int, shots: int, cache_dir,
                 model: str = "lite0-minilm") -> tuple[FinetuneCfg, FinetuneCfg]:
    """``prompts_dir``: a folder with the demo's prompt files (None: the shipped ones)."""
    prompts = [str(prompts_dir / f"{name}.yaml") if prompts_dir else name for name in PROMPTS]
    # The shipped alignment recipe (clipft/resources/configs/align-lite0-minilm.yaml), with epochs and batches sized for a small catalogue.
    align = FinetuneCfg(catalogue=CatalogueCfg(data=str(data), prompts=prompts),
                        towers=TowersCfg(model=model, lock_image=True, lock_text=True),
                        task=TaskCfg(captions="title", hard_negatives=True),
                        optim=OptimCfg(epochs=8, batch_size=64, lr_head=2e-3, warmup_steps=10),
                        eval=EvalCfg(wise_alphas=[1.0]), runtime=RuntimeCfg(seed=seed, cache_dir=cache_dir))
    # Photos only: the generated titles name every attribute, so fusion would make the demo trivial.
    finetune = replace(align, split=SplitCfg(shots=shots), towers=replace(align.towers, lock_text=False),
                       task=TaskCfg(captions="label", inputs="image"),
                       optim=OptimCfg(epochs=10, batch_size=32, lr=2e-5, lr_head=5e-4, warmup_steps=10), eval=EvalCfg())
    return align, finetune


def demo_table(aligned: pd.DataFrame, tuned: pd.DataFrame, shots: int) -> pd.DataFrame:
    """Majority class and zero-shot before alignment (from the alignment run), then the
    fine-tuning run's rows: aligned zero-shot, fine-tuned, WiSE-FT."""
    present = tuned[tuned["titles"] == "present"]
    names = {"zero-shot": "aligned zero-shot", "fine-tuned": f"fine-tuned ({shots} labels/class)"}
    tuned_rows = present[present["model"] != "majority class"].assign(model=lambda f: f["model"].replace(names))
    tuned_rows = tuned_rows.assign(model=model_label(tuned_rows))
    return pd.concat([aligned[aligned["model"] == "majority class"],
                      aligned[aligned["model"] == "zero-shot before alignment"], tuned_rows], ignore_index=True)


def run_demo(out_dir, prompts_dir=None, n: int = 600, shots: int = 8, seed: int = 0, cache_dir=None,
             progress: bool = True, model: str = "lite0-minilm"):
    """Run the demo into ``out_dir``; return the test-split table (attribute x model) and the
    totals of labelling the held-out products with the fine-tuned run (``clipft predict``)."""
    out = Path(out_dir)
    data = make_catalogue(out / "catalogue", n=n, size=128, seed=seed)
    align_cfg, finetune_cfg = demo_configs(data, Path(prompts_dir) if prompts_dir else None, seed, shots, cache_dir, model)
    aligned = run_finetune(align_cfg, out / "align", progress=progress)
    aligned_towers = replace(finetune_cfg.towers, pretrained=str(out / "align" / "best.pt"))
    finetune_cfg = replace(finetune_cfg, towers=aligned_towers,
                           split=replace(finetune_cfg.split, splits_from=str(out / "align" / "splits.csv")))
    tuned = run_finetune(finetune_cfg, out / "finetune", progress=progress)

    table = demo_table(aligned.comparison, tuned.comparison, shots)
    with atomic_write(out / "comparison.csv") as f:
        table.to_csv(f, index=False)
    plot_comparison(table, out / "comparison.png", title=f"Demo: test split of {n} generated products")
    review = run_predict(out / "finetune", CatalogueSource(str(held_out(data, out / "finetune" / "splits.csv"))),
                         out / "predict", EncodeOptions(cache_dir=cache_dir), progress=progress)
    write_report([out / "align", out / "finetune", out / "predict"], out / "report.html")
    return table, review


def held_out(data: Path, splits: Path) -> Path:
    """The test products of the catalogue, as a CSV beside it (so image paths still resolve)."""
    frame = pd.read_csv(data, dtype=str)
    test = pd.read_csv(splits, dtype=str).query("split == 'test'")["id"]
    path = data.with_name("held_out.csv")
    with atomic_write(path) as f:
        frame[frame["id"].isin(test)].to_csv(f, index=False)
    return path
