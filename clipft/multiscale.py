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

Stages are captured with forward hooks, so parameter names, layer groups
(``unlocked_image_groups``) and checkpoints of the towers are unchanged.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def pool_stage(output: torch.Tensor) -> torch.Tensor:
    """(batch, channels): the spatial mean of an NCHW map, the class token of an NLD sequence,
    normalised per example."""
    if output.ndim == 4:
        pooled = output.mean(dim=(2, 3))
    elif output.ndim == 3:
        pooled = output[:, 0]
    else:
        raise ValueError(f"cannot pool a stage output of shape {tuple(output.shape)}")
    return F.layer_norm(pooled.float(), pooled.shape[1:])


class StagePool(nn.Module):
    """Hooks that append the pooled stages to the output of ``module`` (it holds no weights)."""

    def __init__(self, module: nn.Module, stages: list[nn.Module]):
        super().__init__()
        self.captured: list[torch.Tensor] = []
        self.stages = stages  # a plain list: the stages stay registered where they are
        module.register_forward_pre_hook(self.reset)
        for stage in stages:
            stage.register_forward_hook(self.capture)
        module.register_forward_hook(self.append)

    def reset(self, module, args) -> None:
        self.captured = []

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


def add_stages(model: nn.Module, stages: int) -> nn.Module:
    """Give ``model``'s image tower the pooled output of its last ``stages`` stages (see the
    module docstring); returns the model, changed in place."""
    visual = model.visual
    trunk = getattr(visual, "trunk", None)
    if trunk is not None and hasattr(trunk, "blocks") and isinstance(getattr(visual.head, "proj", None), nn.Linear):
        return _add_timm_stages(model, trunk, stages)
    if hasattr(visual, "transformer") and hasattr(visual.transformer, "resblocks"):
        return _add_vit_stages(model, stages)
    raise ValueError(f"multi-scale features need a timm trunk with blocks and a linear projection, or an "
                     f"OpenCLIP ViT; {type(visual).__name__} is neither")


def _check_stages(stages: int, available: int) -> None:
    if not 1 <= stages <= available:
        raise ValueError(f"image_stages: {stages} is not between 1 and the {available} stages this tower has")


def _add_timm_stages(model, trunk: nn.Module, stages: int):
    _check_stages(stages, len(trunk.blocks))
    base = model.visual.head.proj
    trunk.stage_pool = StagePool(trunk, list(trunk.blocks)[-stages:])
    width = blank_output(trunk, model.visual.image_size).shape[1]
    proj = nn.Linear(width, base.out_features, bias=base.bias is not None).to(base.weight)
    with torch.no_grad():
        proj.weight.zero_()
        proj.weight[:, : base.in_features] = base.weight
        if base.bias is not None:
            proj.bias.copy_(base.bias)
    model.visual.head.proj = proj
    return model


def _add_vit_stages(model, stages: int):
    visual = model.visual
    blocks = list(visual.transformer.resblocks)
    _check_stages(stages, len(blocks) - 1)
    embed_dim = visual.output_dim
    visual.stage_pool = StagePool(visual, blocks[-stages - 1 : -1])
    width = blank_output(visual, visual.image_size).shape[1]
    model.visual = MultiScaleTower(visual, StagedHead(embed_dim, width - embed_dim).to(visual.conv1.weight))
    return model
