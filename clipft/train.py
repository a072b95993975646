"""The fine-tuning loop: AdamW, cosine schedule with warm-up, gradient clipping, per-epoch
validation, best-epoch selection by validation loss, early stopping, and atomic checkpoints
that let an interrupted run resume. It receives built objects and parses no arguments."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from .config import ConfigError, FinetuneCfg, config_dict
from .fileio import atomic_write
from .distributed import broadcast_object, current_world, gather_with_grad
from .fusion import ProductFeatures, title_dropout_mask
from .losses import CaptionContrastiveLoss, caption_ids
from .sampler import BalancedBatchSampler, rank_share
from .tasks import Task

HEAD_PARAMETERS = ("visual.head.", "visual.proj", "text.proj", "text_projection", "logit_scale")
# Settings that may change between an interrupted run and its resumption.
RESUMABLE_CHANGES = {"epochs", "patience", "workers", "device", "cache_dir", "eval_batch_size"}
MAX_LOGIT_SCALE = math.log(100)


def lock_towers(model, cfg: FinetuneCfg) -> list[nn.Module]:
    """Freeze what the config says, with OpenCLIP's own locking (LiT-style for the image tower).

    Returns the modules to keep in eval mode while training: a locked image tower runs with
    its batch-norm statistics and without dropout, so that a locked tower gives the same
    features as the cache (batch-norm layers are kept, not replaced by frozen copies, so that
    checkpoints load into a fresh model).
    """
    frozen = []
    if cfg.lock_image:
        model.lock_image_tower(unlocked_groups=cfg.unlocked_image_groups, freeze_bn_stats=False)
        frozen.append(model.visual)
    if cfg.lock_text:
        model.lock_text_tower(unlocked_layers=cfg.unlocked_text_layers)
        if cfg.unlocked_text_layers == 0 and hasattr(model, "text"):
            frozen.append(model.text)
    return frozen


def wise_ft(zeroshot: dict, finetuned: dict, alpha: float) -> dict:
    """WiSE-FT: ``(1 - alpha) * zero-shot + alpha * fine-tuned`` for every floating-point weight."""
    return {
        key: torch.lerp(zeroshot[key], value, alpha) if value.is_floating_point() else value
        for key, value in finetuned.items()
    }


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


def cosine_with_warmup(optimizer, warmup_steps: int, total_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def save_checkpoint(path: Path, payload: dict) -> None:
    with atomic_write(path, "wb") as f:
        torch.save(payload, f)


@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_val_loss: float = float("inf")
    stopped: str = ""
    best_state: dict | None = None  # without an output folder: what changed at the best epoch


def changing_state(model: nn.Module) -> dict:
    """Copies of the trainable parameters and of the buffers: all that training can change."""
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    buffers = {name for name, _ in model.named_buffers()}
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k in trainable or k in buffers}


class ContrastiveStep(nn.Module):
    """One training step's forward pass: this rank's product embeddings, the embeddings of the
    global batch's captions, and the logit scale. A module so that DistributedDataParallel can
    wrap it (its parameters are the model's)."""

    def __init__(self, model: nn.Module, features: Callable, text_fn: Callable):
        super().__init__()
        self.model = model
        self.features = features
        self.text_fn = text_fn

    def forward(self, rows, drop, captions: list[str]):
        return self.features(rows, drop), self.text_fn(captions), self.model.logit_scale.exp()


def _interleave(samplers: list[BalancedBatchSampler]):
    """Round-robin over the tasks' batches until every task has given its epoch."""
    iterators = [iter(s) for s in samplers]
    live = list(range(len(samplers)))
    while live:
        for t in list(live):
            batch = next(iterators[t], None)
            if batch is None:
                live.remove(t)
            else:
                yield t, batch


def fit(
    model: nn.Module,
    tasks: list[Task],
    features: ProductFeatures,
    text_fn: Callable,
    evaluate_fn: Callable[[], dict],
    cfg: FinetuneCfg,
    out_dir: str | Path | None,
    frozen: list[nn.Module] = (),
    device="cpu",
    progress: bool = True,
) -> FitResult:
    """Train ``model`` in place on ``tasks``; leave ``best.pt`` and ``last.pt`` in ``out_dir``.

    ``features(rows, drop)`` gives product embeddings (with gradients where a tower trains;
    ``drop`` marks the examples whose title is dropped this step, with probability
    ``cfg.title_dropout``); ``text_fn(strings)`` gives caption embeddings; ``evaluate_fn()`` scores the validation split and returns a dict with ``loss``.
    ``frozen`` modules are kept in eval mode (no dropout, no batch-norm updates).
    ``out_dir=None`` writes nothing and cannot resume: the best epoch's changes come back in
    ``best_state`` (for many short runs, such as learning curves).
    """
    out = Path(out_dir) if out_dir is not None else None
    world = current_world()
    if cfg.batch_size % world.size:
        raise ConfigError(f"batch_size: {cfg.batch_size} must be a multiple of the number of processes ({world.size})")
    step_module = ContrastiveStep(model, features, text_fn)
    # Under torchrun: gradients averaged by DDP; every rank draws the same global batches and
    # embeds its share of each, and the loss runs over the gathered global batch.
    text_only = getattr(features, "inputs", "image") == "text"  # the image side then has no gradient
    runner = DistributedDataParallel(step_module, find_unused_parameters=text_only) if world.size > 1 else step_module
    samplers = [BalancedBatchSampler(t.labels, cfg.batch_size, seed=cfg.seed + i, min_batches=cfg.min_epoch_steps)
                for i, t in enumerate(tasks)]
    steps_per_epoch = sum(len(s) for s in samplers)
    optimizer = torch.optim.AdamW(parameter_groups(model, cfg), betas=(0.9, 0.98), eps=1e-6)
    scheduler = cosine_with_warmup(optimizer, cfg.warmup_steps, cfg.epochs * steps_per_epoch)
    loss_fn = CaptionContrastiveLoss()
    result = FitResult()
    start_epoch, bad_epochs = 0, 0
    # Reseed here so that dropout does not depend on what ran before (a cache miss draws
    # from the RNG, a cache hit does not); a resumed run restores its saved state instead.
    torch.manual_seed(cfg.seed)

    last = out / "last.pt" if out is not None else None
    if last is not None and last.is_file():
        state = torch.load(last, map_location="cpu", weights_only=True)
        changed = sorted(k for k, v in config_dict(cfg).items()
                         if k not in RESUMABLE_CHANGES and state["config"].get(k) != v)
        if changed:
            raise ConfigError(f"{out} holds a run with other settings ({', '.join(changed)}); "
                             f"use another --out to start a new run")
        model.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        result.history, result.best_epoch, result.best_val_loss = state["history"], state["best_epoch"], state["best_val_loss"]
        start_epoch, bad_epochs = state["epoch"] + 1, state["bad_epochs"]

    def validate(epoch: int, row: dict) -> bool:
        """Score validation (rank 0, told to the others), log it, keep the weights if best."""
        model.eval()
        val = broadcast_object(evaluate_fn() if world.main else None)
        row = {"epoch": epoch, "train_loss": row["train_loss"], "val_loss": val["loss"],
               "logit_scale": model.logit_scale.exp().item(), "lr": row["lr"], "seconds": row["seconds"]}
        for name, metrics in val.items():
            if isinstance(metrics, dict):
                row.update({f"val_{name}_{k}": v for k, v in metrics.items() if k != "n"})
        result.history.append(row)
        if val["loss"] >= result.best_val_loss:
            return False
        result.best_val_loss, result.best_epoch = val["loss"], epoch
        if out is None:
            result.best_state = changing_state(model)
        elif world.main:
            save_checkpoint(out / "best.pt", {"state_dict": model.state_dict(), "epoch": epoch,
                                              "val_loss": val["loss"], "model": cfg.model})
        return True

    if cfg.validate_start and not result.history:
        # Epoch 0: the starting weights compete too, so a few labels never make the model worse
        # on validation than no training at all.
        validate(0, {"train_loss": float("nan"), "lr": 0.0, "seconds": 0.0})

    for epoch in range(start_epoch, cfg.epochs):
        if bad_epochs >= cfg.patience:
            break
        started = time.perf_counter()
        model.train()
        for module in frozen:
            module.eval()
        for sampler in samplers:
            sampler.set_epoch(epoch)
        total, count = 0.0, 0
        bar = tqdm(_interleave(samplers), total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   unit="step", disable=not progress or not world.main, leave=False)
        for step, (t, batch) in enumerate(bar):
            task = tasks[t]
            rng = np.random.default_rng([cfg.seed, epoch, step])
            unique, ids = caption_ids(task.captions(np.asarray(batch), rng))
            # extra captions with no image of their own: negatives only (they sit after the positives)
            seen = set(unique)
            unique += [n for n in dict.fromkeys(task.hard_negatives(np.asarray(batch), rng)) if n not in seen]
            batch = np.asarray(batch)
            drop = title_dropout_mask(len(batch), cfg.title_dropout, rng)
            shares = [rank_share(task.labels[batch], r, world.size) for r in range(world.size)]
            mine = shares[world.rank]  # the positions of the global batch this process embeds
            image, text, logit_scale = runner(task.rows[batch[mine]], drop[mine], unique)
            image = gather_with_grad(image)  # in rank order: rank 0's share, then rank 1's, ...
            loss = loss_fn(image, text, ids[np.concatenate(shares)].to(device), logit_scale)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
            total += loss.item() * len(batch)
            count += len(batch)
            bar.set_postfix(loss=f"{total / count:.4f}")
        improved = validate(epoch + 1, {"train_loss": total / max(count, 1), "lr": scheduler.get_last_lr()[0],
                                        "seconds": round(time.perf_counter() - started, 2)})
        bad_epochs = 0 if improved else bad_epochs + 1
        if out is None or not world.main:
            continue
        with atomic_write(out / "metrics.csv") as f:
            pd.DataFrame(result.history).to_csv(f, index=False)
        save_checkpoint(last, {
            "state_dict": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "torch_rng": torch.get_rng_state(), "epoch": epoch,
            "bad_epochs": bad_epochs, "history": result.history, "best_epoch": result.best_epoch,
            "best_val_loss": result.best_val_loss, "config": config_dict(cfg),
        })
        if progress and world.main:
            row = result.history[-1]
            tqdm.write(f"epoch {epoch + 1}: train loss {row['train_loss']:.4f}, val loss {row['val_loss']:.4f}"
                       f"{' (best)' if improved else ''}, {row['seconds']}s")
    result.stopped = "early stopping" if bad_epochs >= cfg.patience else "all epochs"
    return result
