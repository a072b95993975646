"""Zero-shot throughput: images/s uncached (decode + encode + score) and cached (score only),
and peak memory, for the offline model and a randomly initialised ViT-B-32.

    python benchmarks/throughput.py --n 512

Uses the fashion photos in ../shared/data/fashion when present, else a generated catalogue.
Each model runs in its own process so that its peak memory is its own. Results go to
benchmarks/results/throughput.{json,md}.
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

from clipft.cli import default_workers
from clipft.reporting.tables import markdown_table

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
FASHION = REPO.parent / "shared" / "data" / "fashion" / "styles.csv"
MODELS = [("lite0-minilm", None), ("ViT-B-32", "random")]


def measure(model_name: str, pretrained: str | None, data: str, n: int, batch_size: int, workers: int, seed: int) -> dict:
    import torch

    from clipft import load_catalogue, load_model, load_prompt_specs, zeroshot_catalogue

    specs = load_prompt_specs([REPO / "prompts" / "color.yaml", REPO / "prompts" / "gender.yaml"])
    catalogue = load_catalogue(data, limit=n, seed=seed)
    torch.manual_seed(seed)
    start = time.perf_counter()
    model, preprocess, tokenizer = load_model(model_name, pretrained)
    load_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as cache:
        timings = {}
        for phase in ("uncached", "cached"):
            start = time.perf_counter()
            scored = zeroshot_catalogue(model, preprocess, tokenizer, catalogue, specs, cache_dir=cache,
                                        batch_size=batch_size, workers=workers, progress=False)
            timings[phase] = time.perf_counter() - start
            assert len(scored.rows) == len(catalogue)
    peak_main = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peak_workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {
        "model": model_name,
        "pretrained": pretrained or "default",
        "images": len(catalogue),
        "attributes": len(specs),
        "model_load_s": round(load_s, 2),
        "uncached_s": round(timings["uncached"], 2),
        "uncached_img_per_s": round(len(catalogue) / timings["uncached"], 1),
        "cached_s": round(timings["cached"], 3),
        "cached_img_per_s": round(len(catalogue) / timings["cached"], 1),
        "peak_rss_main_mib": round(peak_main),
        "peak_rss_worker_mib": round(peak_workers),
    }


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        f"Zero-shot throughput, {meta['images']} images from {meta['data']}, batch {meta['batch_size']}, "
        f"{meta['workers']} decode workers, {meta['cpus']} CPU cores, torch threads {meta['threads']}.",
        "",
        "",
    ]
    table = pd.DataFrame({
        "model": [r["model"] for r in rows],
        "weights": [r["pretrained"] for r in rows],
        "uncached img/s": [r["uncached_img_per_s"] for r in rows],
        "cached img/s": [r["cached_img_per_s"] for r in rows],
        "model load s": [r["model_load_s"] for r in rows],
        "peak RSS MiB: main / child processes": [f"{r['peak_rss_main_mib']} / {r['peak_rss_worker_mib']}" for r in rows],
    })
    return "\n".join(lines) + markdown_table(table, digits=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=512, help="images to score")
    parser.add_argument("--data", default=None, help="catalogue CSV (default: fashion photos, else generated)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "PRETRAINED"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.one:
        name, pretrained = args.one
        print(json.dumps(measure(name, None if pretrained == "default" else pretrained, args.data, args.n,
                                 args.batch_size, args.workers, args.seed)))
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
               "--batch-size", str(args.batch_size), "--workers", str(args.workers), "--seed", str(args.seed)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
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
