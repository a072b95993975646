"""The optimiser and its schedule: AdamW with OpenCLIP's weight-decay rule and a cosine
schedule with warm-up (transformers' implementation)."""
from __future__ import annotations

import torch
from transformers import get_cosine_schedule_with_warmup

from .config import FinetuneCfg

HEAD_PARAMETERS = ("visual.head.", "visual.proj", "text.proj", "text_projection", "logit_scale")


def parameter_groups(model, cfg: FinetuneCfg) -> list[dict]:
    """Tower weights at ``lr``, projections and logit scale at ``lr_head``; no weight decay on
    gains, biases and the logit scale (as OpenCLIP does)."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        head = name.startswith(HEAD_PARAMETERS)
        decay = param.ndim >= 2 and "logit_scale" not in name
        groups.setdefault((head, decay), []).append(param)
    return [
        {"params": params, "lr": (cfg.lr_head or cfg.lr) if head else cfg.lr,
         "weight_decay": cfg.weight_decay if decay else 0.0}
        for (head, decay), params in sorted(groups.items())
    ]


def create_optimizer(model, cfg: FinetuneCfg, total_steps: int):
    """(AdamW, its cosine schedule with ``cfg.warmup_steps`` of warm-up over ``total_steps``)."""
    optimizer = torch.optim.AdamW(parameter_groups(model, cfg), betas=(0.9, 0.98), eps=1e-6)
    return optimizer, get_cosine_schedule_with_warmup(optimizer, cfg.warmup_steps, total_steps)
