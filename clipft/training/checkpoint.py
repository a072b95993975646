"""Checkpoints: ``best.pt`` (the weights of the best epoch, loadable anywhere ``--pretrained``
is) and ``last.pt`` (everything a run needs to resume as if never interrupted)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..fileio import atomic_write
from .config import ConfigError

# Settings that may change between an interrupted run and its resumption.
RESUMABLE_CHANGES = {"epochs", "patience", "workers", "device", "cache_dir", "eval_batch_size"}


def save_checkpoint(path: Path, payload: dict) -> None:
    with atomic_write(path, "wb") as f:
        torch.save(payload, f)


@dataclass(frozen=True)
class RunCheckpoints:
    """A run folder's best.pt and last.pt, and the run's settings that they record: flat
    (``clipft.training.config.flat_config``), so that runs saved before the config had sections
    still resume."""

    folder: Path
    settings: dict

    def resume_state(self) -> dict | None:
        """The state saved in ``last.pt``, or None when there is none; refuses a run with other settings."""
        path = self.folder / "last.pt"
        if not path.is_file():
            return None
        state = torch.load(path, map_location="cpu", weights_only=True)
        changed = sorted(k for k, v in self.settings.items()
                         if k not in RESUMABLE_CHANGES and state["config"].get(k) != v)
        if changed:
            raise ConfigError(f"{self.folder} holds a run with other settings ({', '.join(changed)}); "
                              f"use another --out to start a new run")
        return state

    def save_best(self, payload: dict) -> None:
        save_checkpoint(self.folder / "best.pt", {**payload, "model": self.settings.get("model")})

    def save_last(self, payload: dict) -> None:
        save_checkpoint(self.folder / "last.pt", {**payload, "config": self.settings})


def check_same_weights(path: Path, saved: dict, model_state: dict) -> None:
    """Refuse to resume from ``path`` when its weights are not this model's (names or shapes): a
    strict load would fail with a traceback (a ``last.pt`` written by a release whose model had
    other parameters, such as lite0-minilm before its bag of title words)."""
    missing, unexpected = sorted(set(model_state) - set(saved)), sorted(set(saved) - set(model_state))
    reshaped = sorted(k for k in set(saved) & set(model_state) if tuple(saved[k].shape) != tuple(model_state[k].shape))
    if missing or unexpected or reshaped:
        named = ", ".join([f"missing {k}" for k in missing[:3]] + [f"unexpected {k}" for k in unexpected[:3]]
                          + [f"{k} shaped {tuple(saved[k].shape)}" for k in reshaped[:3]])
        raise ConfigError(f"{path} holds weights of another model ({len(missing)} missing, {len(unexpected)} "
                          f"unexpected, {len(reshaped)} of another shape: {named}); it cannot resume here: use "
                          f"another --out to start a new run")


def load_weights(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
