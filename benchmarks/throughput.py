"""Encoding throughput per model and precision, in one run and one process per model:
the image tower's forward pass alone on decoded photos (the limit), a plain OpenCLIP loop
(decode, preprocess, encode: what a user would write), and clipft zero-shot uncached (decode +
encode + score) and cached (score only), with their ratios to the limit; and how close each
precision's image embeddings are to fp32 (cosine).

    python benchmarks/throughput.py --n 256

Uses the fashion photos in ../shared/data/fashion when present, else a generated catalogue.
Results go to benchmarks/results/throughput.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from clipft.commands.options import default_workers
from clipft.reporting.tables import markdown_table

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
FASHION = REPO.parent / "shared" / "data" / "fashion" / "styles.csv"
MODELS = [("lite0-minilm", None), ("ViT-B-32", "random")]


def decoded(paths, preprocess, batch_size: int):
    import torch
    from PIL import Image

    from clipft.catalogue import to_rgb

    tensors = []
    for path in paths:
        with Image.open(path) as img:
            tensors.append(preprocess(to_rgb(img)))
    return [torch.stack(tensors[i : i + batch_size]) for i in range(0, len(tensors), batch_size)]


def forward_alone(model, batches):
    """img/s of the image tower alone at the current precision, and its embeddings."""
    import torch

    from clipft.precision import prepared_encoder

    encoder, context = prepared_encoder(model, "cpu")
    with torch.no_grad(), context:
        encoder.encode_image(batches[0][:2].to(memory_format=torch.channels_last))  # warm-up
        start = time.perf_counter()
        out = [encoder.encode_image(b.to(memory_format=torch.channels_last)).float() for b in batches]
    return sum(len(b) for b in batches) / (time.perf_counter() - start), torch.cat(out).numpy()


def plain_openclip(model, preprocess, paths, batch_size: int) -> float:
    """img/s of the loop a user would write: open, preprocess, encode, fp32."""
    import torch
    from PIL import Image

    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(paths), batch_size):
            batch = torch.stack([preprocess(Image.open(p).convert("RGB")) for p in paths[i : i + batch_size]])
            model.encode_image(batch)
    return len(paths) / (time.perf_counter() - start)


def clipft_rates(model, preprocess, tokenizer, catalogue, specs, batch_size: int, workers: int) -> dict:
    from clipft.labeller import Labeller
    from clipft.scoring import EncodeOptions, score_chunk

    rates = {}
    with tempfile.TemporaryDirectory() as cache:
        # the labeller encodes the prompts when it is built: "uncached" is about photos
        labeller = Labeller.zero_shot(model, preprocess, tokenizer, specs, "image", device="cpu", cache_dir=cache)
        options = EncodeOptions(batch_size=batch_size, workers=workers, cache_dir=cache, device="cpu")
        for phase in ("uncached", "cached"):
            start = time.perf_counter()
            scored = score_chunk(labeller, catalogue, options, progress=False)
            rates[phase] = len(catalogue) / (time.perf_counter() - start)
            assert len(scored.rows) == len(catalogue)
    return rates


def cosines(reference, other):
    import numpy as np

    a = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    b = other / np.linalg.norm(other, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def measure(model_name: str, pretrained: str | None, data: str, n: int, batch_size: int, workers: int, seed: int,
            precisions: list[str]) -> list[dict]:
    import torch

    from clipft import load_catalogue, load_model, load_prompt_specs
    from clipft.precision import encoding_precision

    specs = load_prompt_specs(["color", "gender"])
    catalogue = load_catalogue(data, limit=n, seed=seed)
    torch.manual_seed(seed)
    model, preprocess, tokenizer = load_model(model_name, pretrained)
    batches = decoded(catalogue.image_paths, preprocess, batch_size)
    plain = plain_openclip(model, preprocess, catalogue.image_paths, batch_size)
    rows, reference = [], None
    for precision in precisions:
        with encoding_precision(precision):
            limit, embeddings = forward_alone(model, batches)
            rates = clipft_rates(model, preprocess, tokenizer, catalogue, specs, batch_size, workers)
        reference = embeddings if reference is None else reference
        cos = cosines(reference, embeddings)
        rows.append({"model": model_name, "pretrained": pretrained or "default", "precision": precision,
                     "images": len(catalogue), "forward_img_per_s": round(limit, 1),
                     "plain_openclip_fp32_img_per_s": round(plain, 1),
                     "uncached_img_per_s": round(rates["uncached"], 1), "cached_img_per_s": round(rates["cached"], 1),
                     "uncached_to_limit": round(rates["uncached"] / limit, 3),
                     "cosine_to_fp32_min": round(float(cos.min()), 5), "cosine_to_fp32_mean": round(float(cos.mean()), 5),
                     "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)})
    return rows


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        f"Encoding throughput, {meta['images']} images from {meta['data']}, batch {meta['batch_size']}, "
        f"{meta['workers']} decode workers, {meta['cpus']} CPU cores, torch threads {meta['threads']}; "
        f"`{meta['command']}`. img/s; 'limit' is the image tower's forward pass alone at that precision; "
        "ratios are to the fp32 limit of the same model and run.",
        "",
        "",
    ]
    table = pd.DataFrame(rows)
    fp32 = table[table["precision"] == "fp32"].set_index("model")["forward_img_per_s"]
    table = pd.DataFrame({
        "model": table["model"], "weights": table["pretrained"], "precision": table["precision"],
        "limit": table["forward_img_per_s"], "plain OpenCLIP (fp32)": table["plain_openclip_fp32_img_per_s"],
        "clipft uncached": table["uncached_img_per_s"], "cached": table["cached_img_per_s"],
        "uncached / own limit": table["uncached_to_limit"],
        "uncached / fp32 limit": (table["uncached_img_per_s"] / table["model"].map(fp32)).round(2),
        "cosine to fp32 (min)": table["cosine_to_fp32_min"],
    })
    return "\n".join(lines) + markdown_table(table, digits=3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=512, help="images to score")
    parser.add_argument("--data", default=None, help="catalogue CSV (default: fashion photos, else generated)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--precisions", default="fp32,amp_bf16,int8", help="comma-separated (amp = amp_bf16 on a CPU)")
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "PRETRAINED"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.one:
        name, pretrained = args.one
        print(json.dumps(measure(name, None if pretrained == "default" else pretrained, args.data, args.n,
                                 args.batch_size, args.workers, args.seed, args.precisions.split(","))))
        return

    data = args.data
    if data is None:
        if FASHION.is_file():
            data = str(FASHION)
        else:
            from clipft.commands.sample_data import make_catalogue

            data = str(make_catalogue(tempfile.mkdtemp(prefix="clipft-bench-"), n=args.n, size=224, seed=args.seed))
    rows = []
    for name, pretrained in MODELS:
        cmd = [sys.executable, __file__, "--one", name, pretrained or "default", "--data", data, "--n", str(args.n),
               "--batch-size", str(args.batch_size), "--workers", str(args.workers), "--seed", str(args.seed),
               "--precisions", args.precisions]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows += json.loads(out.strip().splitlines()[-1])
        print(rows[-1], flush=True)

    import torch

    meta = {"images": rows[0]["images"], "data": "fashion photos" if data == str(FASHION) else data,
            "batch_size": args.batch_size, "workers": args.workers, "cpus": os.cpu_count(),
            "threads": torch.get_num_threads(), "python": platform.python_version(), "torch": torch.__version__,
            "command": "python benchmarks/throughput.py " + " ".join(sys.argv[1:])}
    out = Path(args.out)
    from clipft.fileio import atomic_write, write_json

    write_json(out / "throughput.json", {"meta": meta, "results": rows})
    with atomic_write(out / "throughput.md") as f:
        f.write(markdown(rows, meta))
    print(markdown(rows, meta))


if __name__ == "__main__":
    main()
