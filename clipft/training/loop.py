"""The fine-tuning loop: balanced batches, the caption contrastive loss, per-epoch validation,
best-epoch selection by validation loss, early stopping, and checkpoints that let an
interrupted run resume. It receives built objects and parses no arguments.

As OpenCLIP's trainer, it is a few named steps: :meth:`Trainer.resume`,
:meth:`Trainer.train_one_epoch`, :meth:`Trainer.validate` and :meth:`Trainer.save`, put
together by :func:`fit`.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from ..distributed import broadcast_object, current_world, gather_with_grad
from ..fileio import atomic_write
from ..fusion import ProductFeatures, title_dropout_mask
from ..losses import CaptionContrastiveLoss, caption_ids
from .checkpoint import RunCheckpoints, check_same_weights
from .config import ConfigError, OptimCfg
from .optim import create_optimizer
from .sampler import BalancedBatchSampler, rank_share
from .tasks import Task
from .weights import changing_state

MAX_LOGIT_SCALE = math.log(100)


@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_val_loss: float = float("inf")
    stopped: str = ""
    best_state: dict | None = None  # without an output folder: what changed at the best epoch


class TrainingDiverged(RuntimeError):
    """A non-finite loss: the run stops, and best.pt and last.pt keep the last good weights. Not a
    configuration error: the settings were valid, training went wrong with them."""


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


def interleave(samplers: list[BalancedBatchSampler]):
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


def batch_captions(task: Task, batch: np.ndarray, rng: np.random.Generator):
    """The batch's distinct captions, then its hard negatives (extra captions with no image of
    their own, after the positives), each example's index into them, and (multi-valued
    attributes, else None) which captions are other values of each example's product."""
    unique, ids = caption_ids(task.captions(batch, rng))
    first = {j: i for i, j in reversed(list(enumerate(ids.tolist())))}  # each caption's first example
    values = [str(task.texts[batch[first[j]]]) for j in range(len(unique))]
    seen = set(unique)
    unique += [n for n in dict.fromkeys(task.hard_negatives(batch, rng)) if n not in seen]
    also = task.also_positive(batch, values + [None] * (len(unique) - len(values)))
    return unique, ids, None if also is None else torch.from_numpy(also)


class Trainer:
    """The state of one training run between its steps (see the module docstring)."""

    def __init__(self, model, tasks: list[Task], features: ProductFeatures, text_fn: Callable,
                 evaluate_fn: Callable[[], dict], optim: OptimCfg, seed: int, checkpoints: RunCheckpoints | None,
                 frozen=(), device="cpu"):
        self.world = current_world()
        if optim.batch_size % self.world.size:
            raise ConfigError(f"batch_size: {optim.batch_size} must be a multiple of the number of processes "
                              f"({self.world.size})")
        self.model, self.tasks, self.optim, self.seed, self.checkpoints = model, tasks, optim, seed, checkpoints
        self.evaluate_fn, self.frozen, self.device = evaluate_fn, list(frozen), device
        step = ContrastiveStep(model, features, text_fn)
        # Under torchrun: gradients averaged by DDP; every rank draws the same global batches and
        # embeds its share of each, and the loss runs over the gathered global batch.
        text_only = getattr(features, "inputs", "image") == "text"  # the image side then has no gradient
        self.runner = DistributedDataParallel(step, find_unused_parameters=text_only) if self.world.size > 1 else step
        self.samplers = [BalancedBatchSampler(t.labels, optim.batch_size, seed=seed + i,
                                              min_epoch_steps=optim.min_epoch_steps) for i, t in enumerate(tasks)]
        self.steps_per_epoch = sum(len(s) for s in self.samplers)
        self.optimizer, self.scheduler = create_optimizer(model, optim, optim.epochs * self.steps_per_epoch)
        self.loss_fn = CaptionContrastiveLoss()
        self.result = FitResult()
        self.start_epoch, self.bad_epochs = 0, 0

    def resume(self) -> None:
        """Continue from ``last.pt`` when the output folder has one (weights, optimiser,
        schedule, RNG state and history), so the result equals an uninterrupted run."""
        state = self.checkpoints.resume_state() if self.checkpoints is not None else None
        if state is None:
            return
        check_same_weights(self.checkpoints.folder / "last.pt", state["state_dict"], self.model.state_dict())
        self.model.load_state_dict(state["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        self.result.history, self.result.best_epoch = state["history"], state["best_epoch"]
        self.result.best_val_loss = state["best_val_loss"]
        self.start_epoch, self.bad_epochs = state["epoch"] + 1, state["bad_epochs"]

    def train_step(self, task: Task, batch: np.ndarray, rng: np.random.Generator) -> float:
        unique, ids, also = batch_captions(task, batch, rng)
        drop = title_dropout_mask(len(batch), self.optim.title_dropout, rng)
        shares = [rank_share(task.labels[batch], r, self.world.size) for r in range(self.world.size)]
        mine = shares[self.world.rank]  # the positions of the global batch this process embeds
        image, text, logit_scale = self.runner(task.rows[batch[mine]], drop[mine], unique)
        image = gather_with_grad(image)  # in rank order: rank 0's share, then rank 1's, ...
        order = np.concatenate(shares)  # the gathered global batch's order
        also = None if also is None else also[order].to(self.device)
        loss = self.loss_fn(image, text, ids[order].to(self.device), logit_scale, also)
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"training loss is {loss.item()} (the run diverged; try a lower lr, now "
                                   f"{self.optim.lr:g}); the last good checkpoint is kept")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.optim.grad_clip > 0:
            nn.utils.clip_grad_norm_([p for g in self.optimizer.param_groups for p in g["params"]], self.optim.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        with torch.no_grad():
            self.model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        return loss.item()

    def train_one_epoch(self, epoch: int, progress: bool) -> dict:
        started = time.perf_counter()
        self.model.train()
        for module in self.frozen:
            module.eval()
        for sampler in self.samplers:
            sampler.set_epoch(epoch)
        total, count = 0.0, 0
        bar = tqdm(interleave(self.samplers), total=self.steps_per_epoch, desc=f"epoch {epoch + 1}/{self.optim.epochs}",
                   unit="step", disable=not progress or not self.world.main, leave=False)
        for step, (t, batch) in enumerate(bar):
            batch = np.asarray(batch)
            loss = self.train_step(self.tasks[t], batch, np.random.default_rng([self.seed, epoch, step]))
            total += loss * len(batch)
            count += len(batch)
            bar.set_postfix(loss=f"{total / count:.4f}")
        return {"train_loss": total / max(count, 1), "lr": self.scheduler.get_last_lr()[0],
                "seconds": round(time.perf_counter() - started, 2)}

    def validate(self, epoch: int, row: dict) -> bool:
        """Score validation (rank 0, told to the others), log it; True when it is the best so far."""
        self.model.eval()
        val = broadcast_object(self.evaluate_fn() if self.world.main else None)
        if not math.isfinite(val["loss"]):
            raise TrainingDiverged(f"epoch {epoch}: validation loss is {val['loss']} (no validation rows, or the run "
                                   f"diverged); the last good checkpoint is kept")
        row = {"epoch": epoch, "train_loss": row["train_loss"], "val_loss": val["loss"],
               "logit_scale": self.model.logit_scale.exp().item(), "lr": row["lr"], "seconds": row["seconds"]}
        for name, metrics in val.items():
            if isinstance(metrics, dict):
                row.update({f"val_{name}_{k}": v for k, v in metrics.items() if k != "n"})
        self.result.history.append(row)
        if val["loss"] >= self.result.best_val_loss:
            return False
        self.result.best_val_loss, self.result.best_epoch = val["loss"], epoch
        if self.checkpoints is None:
            self.result.best_state = changing_state(self.model)
        elif self.world.main:
            self.checkpoints.save_best({"state_dict": self.model.state_dict(), "epoch": epoch, "val_loss": val["loss"]})
        return True

    def save(self, epoch: int) -> None:
        """history.csv and last.pt (rank 0, with a run folder)."""
        if self.checkpoints is None or not self.world.main:
            return
        with atomic_write(self.checkpoints.folder / "history.csv") as f:
            pd.DataFrame(self.result.history).to_csv(f, index=False)
        self.checkpoints.save_last({
            "state_dict": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "torch_rng": torch.get_rng_state(), "epoch": epoch,
            "bad_epochs": self.bad_epochs, "history": self.result.history, "best_epoch": self.result.best_epoch,
            "best_val_loss": self.result.best_val_loss,
        })


def fit(model: nn.Module, tasks: list[Task], features: ProductFeatures, text_fn: Callable,
        evaluate_fn: Callable[[], dict], optim: OptimCfg, seed: int, checkpoints: RunCheckpoints | None,
        frozen: list[nn.Module] = (), device="cpu", progress: bool = True) -> FitResult:
    """Train ``model`` in place on ``tasks``; leave ``best.pt`` and ``last.pt`` in the run folder.

    ``features(rows, drop)`` gives product embeddings (with gradients where a tower trains;
    ``drop`` marks the examples whose title is dropped this step, with probability
    ``optim.title_dropout``); ``text_fn(strings)`` gives caption embeddings; ``evaluate_fn()``
    scores the validation split and returns a dict with ``loss``. ``seed`` draws the batches and
    each step's randomness. ``frozen`` modules are kept in eval mode (no dropout, no batch-norm
    updates). ``checkpoints=None`` writes nothing and cannot resume: the best epoch's changes
    come back in ``best_state`` (for many short runs, such as learning curves).
    """
    trainer = Trainer(model, tasks, features, text_fn, evaluate_fn, optim, seed, checkpoints, frozen, device)
    # Reseed here so that dropout does not depend on what ran before (a cache miss draws
    # from the RNG, a cache hit does not); a resumed run restores its saved state instead.
    torch.manual_seed(seed)
    trainer.resume()
    if optim.validate_start and not trainer.result.history:
        # Epoch 0: the starting weights compete too, so a few labels never make the model worse
        # on validation than no training at all.
        trainer.validate(0, {"train_loss": float("nan"), "lr": 0.0, "seconds": 0.0})
    for epoch in range(trainer.start_epoch, optim.epochs):
        if trainer.bad_epochs >= optim.patience:
            break
        improved = trainer.validate(epoch + 1, trainer.train_one_epoch(epoch, progress))
        trainer.bad_epochs = 0 if improved else trainer.bad_epochs + 1
        trainer.save(epoch)
        if progress and trainer.world.main:
            row = trainer.result.history[-1]
            tqdm.write(f"epoch {epoch + 1}: train loss {row['train_loss']:.4f}, val loss {row['val_loss']:.4f}"
                       f"{' (best)' if improved else ''}, {row['seconds']}s")
    trainer.result.stopped = "early stopping" if trainer.bad_epochs >= optim.patience else "all epochs"
    return trainer.result
