"""Partial fine-tuning on cached activations: the fast path, generalised to a partly unlocked
image trunk.

With the first blocks of a timm trunk locked and its last ``unlocked_image_groups`` trainable,
everything up to the first trainable block is fixed. Its output (the activation map where the
frozen part ends, flattened, followed by the colour histogram and the pooled stages that end
inside it, see :mod:`clipft.multiscale`) is computed once and cached like any embedding, keyed by the frozen
part's weights; training runs the unlocked blocks, the pooling and the projection on it. On the
fashion photos the last two groups of EfficientNet-Lite0 run on 7x7 maps, a small part of the
network's work, so an epoch takes seconds instead of a pass over the photos.

Trunks laid out as timm's EfficientNet/MobileNet family are supported (``conv_stem``, ``bn1``,
``blocks`` of stages, ``conv_head``, ``bn2``, ``global_pool``); other towers with unlocked
groups run on photos.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..multiscale import blank_output, pool_stage

_LAYOUT = ("conv_stem", "bn1", "blocks", "conv_head", "bn2", "global_pool")


def trunk_steps(trunk: nn.Module) -> tuple[list[nn.Module], set[int]] | None:
    """(the trunk's modules in the order its forward runs them, the indices of the steps where
    a pooled stage ends), or None for a trunk of another layout."""
    if not all(hasattr(trunk, name) for name in _LAYOUT) or getattr(trunk, "drop_rate", 0) > 0:
        return None
    blocks = [block for stage in trunk.blocks for block in stage]
    steps = [trunk.conv_stem, trunk.bn1, *blocks, trunk.conv_head, trunk.bn2, trunk.global_pool]
    pooled = getattr(getattr(trunk, "stage_pool", None), "stages", [])
    ends, last = set(), 1
    for stage in trunk.blocks:
        last += len(stage)
        if any(stage is s for s in pooled):
            ends.add(last)
    return steps, ends


def trainable(module: nn.Module) -> bool:
    """Whether any weight of ``module`` trains."""
    return any(p.requires_grad for p in module.parameters())


def run_steps(steps: nn.ModuleList, ends: set[int], x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``x`` through ``steps``, and the pooled stages that end at the steps in ``ends``, in order."""
    pooled = []
    for i, step in enumerate(steps):
        x = step(x)
        if i in ends:
            pooled.append(pool_stage(x).to(x.dtype))
    return x, pooled


class FrozenPrefix(nn.Module):
    """The trunk up to its first trainable block: (activation map flattened, colour histogram
    of the input if the trunk has one, pooled stages), in the order the trunk's stage pool
    appends them."""

    def __init__(self, steps: list[nn.Module], ends: set[int], histogram: nn.Module | None):
        super().__init__()
        self.steps = nn.ModuleList(steps)
        self.ends, self.histogram = ends, histogram

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        histogram = [] if self.histogram is None else [self.histogram(x).to(x.dtype)]
        x, pooled = run_steps(self.steps, self.ends, x)
        return torch.cat([x.flatten(1), *histogram, *pooled], dim=1)


class TrainableSuffix(nn.Module):
    """The rest of the tower on a :class:`FrozenPrefix` output: the unlocked blocks, the pooled
    stages they end, global pooling and the projection head."""

    def __init__(self, steps: list[nn.Module], ends: set[int], offset: int, shape: tuple[int, ...],
                 head: nn.Module):
        super().__init__()
        self.steps = nn.ModuleList(steps)
        self.ends = {i - offset for i in ends if i >= offset}
        self.shape, self.size, self.head = shape, math.prod(shape), head

    def forward(self, cached: torch.Tensor) -> torch.Tensor:
        x = cached[:, : self.size].reshape(-1, *self.shape).contiguous(memory_format=torch.channels_last)
        x, pooled = run_steps(self.steps, self.ends, x)
        return self.head(torch.cat([x, cached[:, self.size :], *pooled], dim=1))


def partial_split(visual: nn.Module) -> tuple[FrozenPrefix, TrainableSuffix] | None:
    """(frozen prefix, trainable suffix) of an image tower whose trunk's last blocks are
    unlocked, or None where the layout is not supported or nothing before the pooling is frozen."""
    trunk, head = visual.trunk, visual.head
    layout = trunk_steps(trunk)
    if layout is None:
        return None
    steps, ends = layout
    boundary = next((i for i, step in enumerate(steps) if trainable(step)), len(steps))
    frozen_after = [s for s in steps[boundary:] if list(s.parameters()) and not trainable(s)]
    if boundary == 0 or frozen_after:
        return None  # nothing frozen, or a frozen block after a trainable one (it would run at every step)
    histogram = getattr(getattr(trunk, "stage_pool", None), "histogram", None)
    prefix = FrozenPrefix(steps[:boundary], {i for i in ends if i < boundary}, histogram)
    shape = tuple(blank_output(nn.Sequential(*prefix.steps), visual.image_size).shape[1:])
    return prefix, TrainableSuffix(steps[boundary:], ends, boundary, shape, head)

