"""What multi-scale features cost: lite0-minilm's image tower with and without its pooled
trunk stages and colour histogram (as its JSON config sets them), the same weights, timed in
alternation in one process (so both see the same machine load), on batches of 64 images at
224x224.

    python benchmarks/multiscale_cost.py [--rounds 6]

Results go to benchmarks/results/multiscale_cost.{json,md}. benchmarks/throughput.py measures
the whole encoding path of the model as shipped (with its stages and histogram).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from clipft.fileio import atomic_write, write_json
from clipft.model_registry import image_stages
from clipft.multiscale import add_stages
from clipft.offline_model import OFFLINE_MODEL, create_lite0_minilm

HERE = Path(__file__).resolve().parent


def towers():
    """(single-scale, multi-scale) lite0-minilm with identical trunk weights, in eval mode."""
    plain, _ = create_lite0_minilm()
    staged, _ = create_lite0_minilm(from_checkpoint=True)
    add_stages(staged, *image_stages(OFFLINE_MODEL))
    staged.visual.trunk.load_state_dict(plain.visual.trunk.state_dict())
    for model in (plain, staged):
        model.eval().visual.to(memory_format=torch.channels_last)
    return plain, staged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args()
    plain, staged = towers()
    batch = torch.randn(args.batch_size, 3, 224, 224).contiguous(memory_format=torch.channels_last)
    seconds = {"single-scale": 0.0, "multi-scale": 0.0}
    with torch.no_grad():
        plain.encode_image(batch), staged.encode_image(batch)  # warm-up
        for _ in range(args.rounds):
            for name, model in (("single-scale", plain), ("multi-scale", staged)):
                started = time.perf_counter()
                model.encode_image(batch)
                seconds[name] += time.perf_counter() - started
    images = args.rounds * args.batch_size
    rate = {name: round(images / s, 1) for name, s in seconds.items()}
    change = rate["multi-scale"] / rate["single-scale"] - 1
    result = {"command": f"python benchmarks/multiscale_cost.py {' '.join(sys.argv[1:])}".strip(),
              "images_per_s": rate, "change": round(change, 4), "threads": torch.get_num_threads()}
    write_json(Path(args.out) / "multiscale_cost.json", result)
    with atomic_write(Path(args.out) / "multiscale_cost.md") as f:
        f.write(f"lite0-minilm image tower, {images} images per tower, torch threads {torch.get_num_threads()}; "
                f"`{result['command']}`\n\n| tower | images/s |\n|---|---|\n"
                + "".join(f"| {k} | {v} |\n" for k, v in rate.items())
                + f"\nmulti-scale vs single-scale: {change:+.1%}\n")
    print(result)


if __name__ == "__main__":
    main()
