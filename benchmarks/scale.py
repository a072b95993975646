"""A catalogue of a million products: manifest validation and zero-shot scoring from a warm
cache, with time and peak memory.

    python benchmarks/scale.py --pretrained runs/align-lite0-minilm/best.pt --set-cache /tmp/cache

Generates a catalogue of --rows products (default 1,000,000) whose photos and titles are drawn
from --images real fashion products (`../shared/data/fashion/`), warms the cache by scoring
those products once, then runs `clipft zeroshot` on the big catalogue in a child process
(photo + title fusion, gender and colour) and records its wall-clock time and peak resident
memory (`getrusage` of the child). Results: benchmarks/results/scale.{json,md}.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from clipft.fileio import atomic_write, write_json

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
FASHION = REPO.parent / "shared" / "data" / "fashion"


def make_catalogue(path: Path, rows: int, images: int, seed: int) -> None:
    """``rows`` products, each a copy of one of the first ``images`` fashion products (its
    photo by absolute path, its title and labels) under an id of its own."""
    styles = pd.read_csv(FASHION / "styles.csv", dtype=str).head(images)
    styles["image"] = [str(FASHION / "images" / f"{i}.jpg") for i in styles["id"]]
    styles = styles[["id", "image", "productDisplayName", "gender", "baseColour"]]
    styles.to_csv(path.with_name("warm.csv"), index=False)
    pick = np.random.default_rng(seed).integers(len(styles), size=rows)
    with atomic_write(path) as f:
        for start in range(0, rows, 100_000):
            chunk = styles.iloc[pick[start : start + 100_000]].assign(id=np.arange(start, min(rows, start + 100_000)))
            chunk.to_csv(f, index=False, header=start == 0)


PEAK_OF_CHILD = """
import resource, subprocess, sys
code = subprocess.call(sys.argv[1:])
print("peak_rss_kib", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(code)
"""


def zeroshot(csv: Path, out: Path, args) -> dict:
    command = [sys.executable, "-m", "clipft", "zeroshot", "--data", str(csv), "--out", str(out),
               "--prompts", str(REPO / "prompts" / "gender.yaml"), "--prompts", str(REPO / "prompts" / "color.yaml"),
               "--model", "lite0-minilm", "--chunk-size", str(args.chunk_size)]
    command += ["--pretrained", args.pretrained] if args.pretrained else []
    command += ["--cache-dir", args.cache_dir] if args.cache_dir else []
    # A small parent per run, so that getrusage(RUSAGE_CHILDREN) sees this run's peak alone.
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", PEAK_OF_CHILD, *command], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    print(result.stdout, flush=True)
    lines = result.stdout.strip().splitlines()
    return {"seconds": round(seconds, 1), "peak_rss_mib": round(int(lines[-1].split()[-1]) / 1024), "output": lines[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--images", type=int, default=2000, help="distinct real products the rows point at")
    parser.add_argument("--chunk-size", type=int, default=50_000)
    parser.add_argument("--pretrained", default=None, help="lite0-minilm checkpoint (e.g. the aligned one)")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default=str(HERE / ".work" / "scale"))
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args()

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    big = work / f"catalogue-{args.rows}.csv"
    if not big.is_file():
        make_catalogue(big, args.rows, args.images, args.seed)
    warm = zeroshot(work / "warm.csv", work / "warm-out", args)  # encodes the distinct photos and titles
    measured = zeroshot(big, work / "big-out", args)
    result = {"rows": args.rows, "distinct_images": args.images, "chunk_size": args.chunk_size,
              "csv_mib": round(big.stat().st_size / 2**20), "warm_up": warm, "measured": measured,
              "command": f"python benchmarks/scale.py {' '.join(sys.argv[1:])}"}
    out = Path(args.out)
    write_json(out / "scale.json", result)
    with atomic_write(out / "scale.md") as f:
        f.write(f"`{result['command']}`: {args.rows:,} rows ({result['csv_mib']} MiB of CSV) pointing at "
                f"{args.images:,} photos, warm cache, chunks of {args.chunk_size:,} rows: "
                f"{measured['seconds']} s, peak RSS {measured['peak_rss_mib']} MiB "
                f"(warm-up run: {warm['seconds']} s, {warm['peak_rss_mib']} MiB).\n")
    print(f"{args.rows:,} rows in {measured['seconds']} s, peak RSS {measured['peak_rss_mib']} MiB")


if __name__ == "__main__":
    main()
