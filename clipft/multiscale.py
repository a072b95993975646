"""Multi-scale image features: an image tower that projects pooled features of several of its
stages, not only of its last.

ImageNet's last layers discard colour and texture that the earlier stages still hold (Head2Toe,
Evci et al. 2022): on the fashion photos a linear probe on EfficientNet-Lite0's final pooled
features gets baseColour 0.565, and 0.676 with every stage's pooled output beside them.

Each stage's output is pooled (the spatial mean of a feature map, the class token of a token
sequence) and normalised (layer norm without gain or bias, so that no stage's scale drowns the
others), and the stages are concatenated after the features the tower's projection already
reads. A projection of the stages joins that projection, starting at zero: a tower with stages
added embeds exactly as before until it is trained.

- timm towers (``lite0-minilm``): the stages are the trunk's ``blocks``; the trunk's output
  grows and so does the linear projection ``visual.head.proj``, so the trunk is still the
  frozen part whose output the cache keeps, and the head is still what trains on it.
- OpenCLIP ViTs: the stages are the residual blocks before the last; the tower becomes
  ``trunk`` (the ViT, its embedding followed by the stages) and ``head`` (the embedding plus
  the projected stages), the same split as a timm tower.

A foreground colour histogram of the photo (:class:`ColourHistogram`) can join the stages: on
the fashion test split, photos only, it takes baseColour from 0.560 to 0.622 aligned zero-shot,
0.671 to 0.706 for a probe and 0.667 to 0.701 fine-tuned (benchmarks/photos_only.py).

Stages are captured with forward hooks, so parameter names, layer groups
(``unlocked_image_groups``) and checkpoints of the towers are unchanged.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def normalise(features: torch.Tensor) -> torch.Tensor:
    """Layer norm without gain or bias, per example: every stage on the same scale."""
    return F.layer_norm(features.float(), features.shape[1:])


def pool_stage(output: torch.Tensor) -> torch.Tensor:
    """(batch, channels): the spatial mean of an NCHW map, the class token of an NLD sequence,
    normalised per example."""
    if output.ndim == 4:
        pooled = output.mean(dim=(2, 3))
    elif output.ndim == 3:
        pooled = output[:, 0]
    else:
        raise ValueError(f"cannot pool a stage output of shape {tuple(output.shape)}")
    return normalise(pooled)


class ColourHistogram(nn.Module):
    """(batch, bins**3): the colour distribution of the product in a photo, from the tower's input.

    Product photos are shot on a plain background, taken as the median colour of the image's
    border; pixels further than ``threshold`` from it (RGB on [0, 1]) are the product, or every
    pixel where under 1% are. Their proportions in ``bins``-per-channel RGB cells are
    square-rooted (the Hellinger embedding, in which a linear layer compares distributions
    fairly) and normalised as every stage is. Counting is not differentiable and needs none:
    nothing before it trains. Only every ``stride``-th pixel of each row and column is counted:
    on fashion photos the proportions keep a cosine of 0.998 to a count of every pixel, at a
    tenth of the cost (the full count slowed the tower by 11%). ``mean``/``std``: the
    preprocessing's, to undo on the input.
    """

    def __init__(self, mean, std, bins: int = 8, stride: int = 2, border: int = 6, threshold: float = 0.12):
        super().__init__()
        self.mean, self.std = tuple(mean), tuple(std)
        self.bins, self.stride, self.border, self.threshold = bins, stride, border, threshold

    def extra_repr(self) -> str:
        return (f"bins={self.bins}, stride={self.stride}, border={self.border}, threshold={self.threshold}, "
                f"mean={self.mean}, std={self.std}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Channels last: the per-pixel reductions over colour run several times faster.
        x = x[:, :, :: self.stride, :: self.stride].contiguous(memory_format=torch.channels_last)
        std, mean = (x.new_tensor(v, dtype=torch.float32).view(1, 3, 1, 1) for v in (self.std, self.mean))
        rgb = (x.float() * std + mean).clamp(0, 1)
        cells = (rgb * self.bins).long().clamp(max=self.bins - 1)
        index = (cells[:, 0] * self.bins + cells[:, 1]) * self.bins + cells[:, 2]
        counts = torch.zeros(len(x), self.bins**3, device=x.device)
        counts.scatter_add_(1, index.flatten(1), self.foreground(rgb).flatten(1))
        return normalise((counts / counts.sum(dim=1, keepdim=True)).sqrt())

    def foreground(self, rgb: torch.Tensor) -> torch.Tensor:
        """(batch, height, width): 1 where a pixel is the product's, 0 where the background's."""
        b = self.border
        edges = torch.cat([rgb[:, :, :b].flatten(2), rgb[:, :, -b:].flatten(2),
                           rgb[..., :b].flatten(2), rgb[..., -b:].flatten(2)], dim=2)
        background = edges.median(dim=2).values[:, :, None, None]
        mask = ((rgb - background).norm(dim=1) > self.threshold).float()
        mask[mask.flatten(1).mean(dim=1) < 0.01] = 1.0
        return mask


class StagePool(nn.Module):
    """Hooks that append the pooled stages to the output of ``module`` (it holds no weights),
    after the ``histogram`` of its input if one is given."""

    def __init__(self, module: nn.Module, stages: list[nn.Module], histogram: ColourHistogram | None = None):
        super().__init__()
        self.captured: list[torch.Tensor] = []
        self.stages = stages  # a plain list: the stages stay registered where they are
        self.histogram = histogram
        module.register_forward_pre_hook(self.reset)
        for stage in stages:
            stage.register_forward_hook(self.capture)
        module.register_forward_hook(self.append)

    def extra_repr(self) -> str:
        return f"stages={len(self.stages)}"

    def reset(self, module, args) -> None:
        self.captured = [] if self.histogram is None else [self.histogram(args[0])]

    def capture(self, module, args, output) -> None:
        self.captured.append(pool_stage(output))

    def append(self, module, args, output: torch.Tensor) -> torch.Tensor:
        stages, self.captured = self.captured, []
        return torch.cat([output, *(s.to(output.dtype) for s in stages)], dim=1)


class StagedHead(nn.Module):
    """A ViT's head: its embedding (the first ``embed_dim`` features) plus the projected stages."""

    def __init__(self, embed_dim: int, stage_dim: int):
        super().__init__()
        self.embed_dim = embed_dim
        self.proj = nn.Linear(stage_dim, embed_dim, bias=False)
        nn.init.zeros_(self.proj.weight)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features[:, : self.embed_dim] + self.proj(features[:, self.embed_dim :])


class MultiScaleTower(nn.Module):
    """A ViT image tower as (trunk, head), as OpenCLIP's timm towers are."""

    def __init__(self, trunk: nn.Module, head: StagedHead):
        super().__init__()
        self.trunk, self.head = trunk, head
        for name in ("image_size", "preprocess_cfg", "output_tokens"):
            if hasattr(trunk, name):
                setattr(self, name, getattr(trunk, name))

    def lock(self, unlocked_groups: int = 0, freeze_bn_stats: bool = False) -> None:
        """OpenCLIP's locking of the ViT; the stages' projection stays trainable, as a timm head does."""
        self.trunk.lock(unlocked_groups=unlocked_groups, freeze_bn_stats=freeze_bn_stats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


def blank_output(module: nn.Module, image_size) -> torch.Tensor:
    """``module``'s output for one blank image, run in eval mode (no batch-norm statistics
    change) with every submodule's mode restored after: how shapes of a tower are found."""
    size = tuple(image_size) if isinstance(image_size, (tuple, list)) else (image_size, image_size)
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        with torch.no_grad():
            return module(torch.zeros(1, 3, *size, device=next(module.parameters()).device))
    finally:
        for m, training in modes:
            m.training = training


def add_stages(model: nn.Module, stages: int, colour_bins: int = 0) -> nn.Module:
    """Give ``model``'s image tower the pooled output of its last ``stages`` stages, after a
    foreground colour histogram of ``colour_bins`` per channel where it is not 0 (see the module
    docstring); returns the model, changed in place."""
    visual = model.visual
    histogram = None
    if colour_bins:
        cfg = visual.preprocess_cfg
        histogram = ColourHistogram(cfg["mean"], cfg["std"], bins=colour_bins)
    trunk = getattr(visual, "trunk", None)
    if trunk is not None and hasattr(trunk, "blocks") and isinstance(getattr(visual.head, "proj", None), nn.Linear):
        return _add_timm_stages(model, trunk, stages, histogram)
    if hasattr(visual, "transformer") and hasattr(visual.transformer, "resblocks"):
        return _add_vit_stages(model, stages, histogram)
    raise ValueError(f"multi-scale features need a timm trunk with blocks and a linear projection, or an "
                     f"OpenCLIP ViT; {type(visual).__name__} is neither")


def _check_stages(stages: int, available: int) -> None:
    if not 1 <= stages <= available:
        raise ValueError(f"image_stages: {stages} is not between 1 and the {available} stages this tower has")


def _add_timm_stages(model, trunk: nn.Module, stages: int, histogram: ColourHistogram | None):
    _check_stages(stages, len(trunk.blocks))
    base = model.visual.head.proj
    trunk.stage_pool = StagePool(trunk, list(trunk.blocks)[-stages:], histogram)
    width = blank_output(trunk, model.visual.image_size).shape[1]
    proj = nn.Linear(width, base.out_features, bias=base.bias is not None).to(base.weight)
    with torch.no_grad():
        proj.weight.zero_()
        proj.weight[:, : base.in_features] = base.weight
        if base.bias is not None:
            proj.bias.copy_(base.bias)
    model.visual.head.proj = proj
    return model


def _add_vit_stages(model, stages: int, histogram: ColourHistogram | None):
    visual = model.visual
    blocks = list(visual.transformer.resblocks)
    _check_stages(stages, len(blocks) - 1)
    embed_dim = visual.output_dim
    visual.stage_pool = StagePool(visual, blocks[-stages - 1 : -1], histogram)
    width = blank_output(visual, visual.image_size).shape[1]
    model.visual = MultiScaleTower(visual, StagedHead(embed_dim, width - embed_dim).to(visual.conv1.weight))
    return model
