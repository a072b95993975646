"""Checkpoints: ``best.pt`` (the weights of the best epoch, loadable anywhere ``--pretrained``
is) and ``last.pt`` (everything a run needs to resume as if never interrupted)."""
from __future__ import annotations

from pathlib import Path

import torch

from ..fileio import atomic_write
from .config import ConfigError, FinetuneCfg, config_dict

# Settings that may change between an interrupted run and its resumption.
RESUMABLE_CHANGES = {"epochs", "patience", "workers", "device", "cache_dir", "eval_batch_size"}


def save_checkpoint(path: Path, payload: dict) -> None:
    with atomic_write(path, "wb") as f:
        torch.save(payload, f)


def load_resumable(path: Path, cfg: FinetuneCfg) -> dict | None:
    """The state saved in ``last.pt``, or None when there is none; refuses a run with other settings."""
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    changed = sorted(k for k, v in config_dict(cfg).items()
                     if k not in RESUMABLE_CHANGES and state["config"].get(k) != v)
    if changed:
        raise ConfigError(f"{path.parent} holds a run with other settings ({', '.join(changed)}); "
                          f"use another --out to start a new run")
    return state


def load_weights(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
