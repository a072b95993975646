"""Precisions on a CUDA GPU: the image tower's forward pass per precision (images/s on
preprocessed batches) and how close clipft's cached embeddings of generated photos are to fp32.

    python benchmarks/gpu_amp.py --out benchmarks/results

Needs a GPU; ViT-B-32 runs with random weights (its pretrained ones need a download), so this
measures speed and agreement, not accuracy. Results: <out>/gpu_amp.{json,md}.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from clipft.cache.encoding import encode_images
from clipft.commands.sample_data import make_catalogue
from clipft.fileio import atomic_write, write_json
from clipft.models import load_model
from clipft.precision import encoding_precision, prepared_encoder, resolve_precision
from clipft.reporting.tables import markdown_table

PRECISIONS = ("fp32", "amp", "amp_bf16")


def forward_rate(model, batch: torch.Tensor, repeats: int) -> float:
    encoder, context = prepared_encoder(model, "cuda")
    with torch.no_grad(), context:
        for _ in range(3):
            encoder.encode_image(batch)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            encoder.encode_image(batch)
        torch.cuda.synchronize()
    return repeats * len(batch) / (time.perf_counter() - start)


def measure(name: str, photos: list[Path], batch_size: int, repeats: int) -> list[dict]:
    torch.manual_seed(0)
    model, preprocess, _ = load_model(name, "random", "cuda")
    size = getattr(model.visual, "image_size", 224)
    height, width = size if isinstance(size, (tuple, list)) else (size, size)
    batch = torch.randn(batch_size, 3, height, width, device="cuda")
    rows, reference = [], None
    for precision in PRECISIONS:
        with encoding_precision(precision), tempfile.TemporaryDirectory() as cache:
            rate = forward_rate(model, batch, repeats)
            embeddings = encode_images(model, preprocess, photos, cache, "cuda", batch_size=batch_size,
                                       progress=False).embeddings
        reference = embeddings if reference is None else reference
        cos = (reference * embeddings).sum(1) / np.linalg.norm(reference, axis=1) / np.linalg.norm(embeddings, axis=1)
        rows.append({"model": name, "precision": precision, "forward_img_per_s": round(rate, 1),
                     "cosine_to_fp32_min": round(float(cos.min()), 5)})
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=512, help="generated photos for the agreement check")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_amp.py needs a CUDA GPU")
    assert resolve_precision(None, "cuda") == "amp"
    data = make_catalogue(Path(tempfile.mkdtemp()), n=args.n, size=224, seed=0)
    photos = [data.parent / p for p in pd.read_csv(data)["image"]]
    rows = [r for name in ("clipft-tiny", "ViT-B-32") for r in measure(name, photos, args.batch_size, args.repeats)]
    meta = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "batch_size": args.batch_size,
            "photos": args.n, "command": "python benchmarks/gpu_amp.py"}
    out = Path(args.out)
    write_json(out / "gpu_amp.json", {"meta": meta, "results": rows})
    with atomic_write(out / "gpu_amp.md") as f:
        f.write(f"{meta['gpu']}, torch {meta['torch']}, batch {args.batch_size}, random weights; "
                f"`{meta['command']}`:\n\n" + markdown_table(pd.DataFrame(rows)))


if __name__ == "__main__":
    main()
