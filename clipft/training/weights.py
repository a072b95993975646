"""What trains and what the weights become: tower locking, WiSE-FT interpolation, and the
snapshot of what training can change."""
from __future__ import annotations

import torch
from torch import nn

from .config import TowersCfg


def lock_towers(model, towers: TowersCfg) -> list[nn.Module]:
    """Freeze what ``towers`` says, with OpenCLIP's own locking (LiT-style for the image tower).

    Returns the modules to keep in eval mode while training: a locked image tower runs with
    its batch-norm statistics and without dropout, so that a locked tower gives the same
    features as the cache (batch-norm layers are kept, not replaced by frozen copies, so that
    checkpoints load into a fresh model).
    """
    frozen = []
    if towers.lock_image:
        model.lock_image_tower(unlocked_groups=towers.unlocked_image_groups, freeze_bn_stats=False)
        frozen.append(model.visual)
    if towers.lock_text:
        model.lock_text_tower(unlocked_layers=towers.unlocked_text_layers)
        if towers.unlocked_text_layers == 0 and hasattr(model, "text"):
            frozen.append(model.text)
    return frozen


def wise_ft(zeroshot: dict, finetuned: dict, alpha: float) -> dict:
    """WiSE-FT: ``(1 - alpha) * zero-shot + alpha * fine-tuned`` for every floating-point weight."""
    return {
        key: torch.lerp(zeroshot[key], value, alpha) if value.is_floating_point() else value
        for key, value in finetuned.items()
    }


def changing_state(model: nn.Module) -> dict:
    """Copies of the trainable parameters and of the buffers: all that training can change."""
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    buffers = {name for name, _ in model.named_buffers()}
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k in trainable or k in buffers}
