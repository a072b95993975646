"""The optimiser and its schedule: AdamW with OpenCLIP's weight-decay rule and a cosine
schedule with warm-up (transformers' implementation)."""
from __future__ import annotations

import torch
from transformers import get_cosine_schedule_with_warmup

from .config import OptimCfg

HEAD_PARAMETERS = ("visual.head.", "visual.proj", "text.proj", "text_projection", "logit_scale")
# Embeddings of title words start from nothing: at a projection's rate they barely move in a run.
WORD_PARAMETERS = ("text.words.",)


def _rate(name: str, optim: OptimCfg) -> float:
    if name.startswith(WORD_PARAMETERS):
        return optim.lr_words
    return (optim.lr_head or optim.lr) if name.startswith(HEAD_PARAMETERS) else optim.lr


def parameter_groups(model, optim: OptimCfg) -> list[dict]:
    """Tower weights at ``lr``, projections and logit scale at ``lr_head``, a bag of title words
    at ``lr_words``; no weight decay on gains, biases and the logit scale (as OpenCLIP does)."""
    groups: dict[tuple[float, bool], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decay = param.ndim >= 2 and "logit_scale" not in name
        groups.setdefault((_rate(name, optim), decay), []).append(param)
    return [{"params": params, "lr": lr, "weight_decay": optim.weight_decay if decay else 0.0}
            for (lr, decay), params in sorted(groups.items())]


def create_optimizer(model, optim: OptimCfg, total_steps: int):
    """(AdamW, its cosine schedule with ``optim.warmup_steps`` of warm-up over ``total_steps``)."""
    optimizer = torch.optim.AdamW(parameter_groups(model, optim), betas=(0.9, 0.98), eps=1e-6)
    return optimizer, get_cosine_schedule_with_warmup(optimizer, optim.warmup_steps, total_steps)
