"""Would the photo's framing or a finer colour histogram help photos-only accuracy? (issue 25).
The trunk_probe.py recipe (a logistic regression on EfficientNet-Lite0's standardised multi-scale
features, before alignment; train on train, C chosen on validation, scored on test) on variants of
the features lite0-minilm reads:

- framing: the centre square clipft encodes (OpenCLIP's evaluation transform: the short side to
  224 px, then the centre 224 x 224, which cuts 37 px from the top and bottom of a 225 x 300
  fashion photo), the whole photo squashed to 224 x 224, or the whole photo at 224 x 298;
- colour: the shipped 8-bin-per-channel foreground histogram alone, or a 12- or 16-bin one
  beside it.

    python benchmarks/trunk_probe.py          # the centre-square features, once
    python benchmarks/photo_features.py

Needs ../shared/data/fashion and the aligned model's split (runs/align-lite0-minilm/splits.csv).
Features are kept in --work (photo features: never commit them); about 25 minutes on 2 CPU
cores the first time. Throughput is the forward pass of the trunk with its multi-scale features
and the extra histogram (batch 64, fp32, this machine's threads, best of 5 rounds). Results:
benchmarks/results/photo_features.md.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torchvision import transforms

from clipft.fileio import atomic_write
from clipft.multiscale import ColourHistogram
from clipft.offline_model import LITE0_MEAN, LITE0_STD
from clipft.prompts import load_prompt_spec
from clipft.reporting.tables import markdown_table
from trunk_probe import (PROMPTS, arguments, cached, forward_throughput, photo_batches, probe, split_catalogue,
                         trunk_with_stages)

BICUBIC = transforms.InterpolationMode.BICUBIC
# variant -> (framing: None for the centre square clipft encodes, extra histogram bins: None for none)
VARIANTS = {
    "centre square (shipped)": (None, None),
    "whole photo, squashed to 224 x 224": ((224, 224), None),
    "whole photo, 224 x 298": (224, None),
    "centre square + 12-bin histogram": (None, 12),
    "centre square + 16-bin histogram": (None, 16),
}


def framed(size) -> transforms.Compose:
    """The whole photo resized to ``size`` (torchvision's meaning: a pair, or the short side)."""
    return transforms.Compose([transforms.Resize(size, interpolation=BICUBIC), transforms.ToTensor(),
                               transforms.Normalize(LITE0_MEAN, LITE0_STD)])


def variant_features(framing, bins, ids, work: Path, trunk) -> np.ndarray:
    """A variant's features: the trunk's multi-scale features of the framed photo, and the extra
    histogram's beside them where there is one."""
    # the centre square is trunk_probe.py's "lite0" features: the same file
    name = "lite0" if framing is None else "lite0-" + "x".join(map(str, np.atleast_1d(framing)))
    x = cached(work, name, ids, photo_batches(ids, 224, preprocess=None if framing is None else framed(framing)), trunk)
    if bins is None:
        return x
    histogram = ColourHistogram(LITE0_MEAN, LITE0_STD, bins=bins)
    return np.concatenate([x, cached(work, f"histogram{bins}", ids, photo_batches(ids, 224), histogram)], axis=1)


def throughputs(ids, trunk, rounds: int = 5) -> dict[str, float]:
    """Images/s of each variant's encoding: the trunk's forward pass on a batch framed as the
    variant frames it, plus the extra histogram's where there is one. Each part is timed once a
    round and its best round kept, so that a slow spell of the machine falls on every part alike
    and variants that share a part share its time."""
    framings = {framing for framing, _ in VARIANTS.values()}
    batches = {f: next(photo_batches(ids, 224, preprocess=None if f is None else framed(f))) for f in framings}
    parts = {("trunk", f): (trunk, batches[f]) for f in framings}
    parts |= {("histogram", b): (ColourHistogram(LITE0_MEAN, LITE0_STD, bins=b), batches[None])
              for _, b in VARIANTS.values() if b is not None}
    seconds = dict.fromkeys(parts, float("inf"))  # per image
    for _ in range(rounds):
        for part, (module, batch) in parts.items():
            seconds[part] = min(seconds[part], 1 / forward_throughput(module, batch, repeats=1))
    return {v: 1 / (seconds["trunk", f] + (0 if b is None else seconds["histogram", b])) for v, (f, b) in VARIANTS.items()}


def main() -> None:
    args = arguments(__doc__)
    torch.manual_seed(0)
    frame = split_catalogue(args.splits)
    ids, (trunk, _) = frame["id"].tolist(), trunk_with_stages("lite0")
    # every variant's features, then the throughputs, then the fits: timed between fits, the same forward pass
    # varied by half from one variant to the next
    x = {v: variant_features(framing, bins, ids, Path(args.work), trunk) for v, (framing, bins) in VARIANTS.items()}
    speed = throughputs(ids, trunk)
    specs, rows = [load_prompt_spec(prompt) for prompt in PROMPTS], []
    for variant in VARIANTS:
        accuracy = {s.attribute: probe(x[variant], frame, s.column, list(s.classes))["test accuracy"] for s in specs}
        rows.append({"features": variant, "dims": x[variant].shape[1], "img/s": round(speed[variant], 1), **accuracy,
                     "mean": round(float(np.mean(list(accuracy.values()))), 3)})
    with atomic_write(Path(args.out) / "photo_features.md") as f:
        f.write("Logistic regression on EfficientNet-Lite0's multi-scale features, fashion test split, before alignment, "
                f"by framing and colour histogram (`python benchmarks/photo_features.py`):\n\n{markdown_table(pd.DataFrame(rows))}\n")


if __name__ == "__main__":
    main()
