"""Where training gets image embeddings from.

With the image tower locked, everything up to its trainable head is fixed, so its output is
computed once (and cached on disk like any embedding) and training runs on it directly: the
fast path. With the last blocks of a timm trunk unlocked, the activations where the frozen
part ends are cached instead (:mod:`clipft.cache.partial_tower`). Otherwise photos are decoded
and sent through the tower at every step.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import ImageOps
from torch import nn

from ..catalogue import ImageFiles
from .partial_tower import partial_split, trainable


class FrozenEncoder(nn.Module):
    """Exposes a frozen part of the image tower under the name ``visual`` so that the embedding
    cache keys it by its own weights."""

    def __init__(self, frozen: nn.Module):
        super().__init__()
        self.visual = frozen

    def encode_image(self, x):
        return self.visual(x)


def image_trunk_and_head(model) -> tuple[nn.Module, nn.Module]:
    """The image tower as (trunk, projection head) where it has them (timm towers such as
    lite0-minilm's), else (the whole tower, identity): the trunk's output is what the cache keeps."""
    visual = model.visual
    trunk, head = getattr(visual, "trunk", None), getattr(visual, "head", None)
    return (trunk, head) if trunk is not None and head is not None else (visual, nn.Identity())


def frozen_split(model) -> tuple[nn.Module, nn.Module] | None:
    """(frozen part, trainable rest) of a locked image tower, or None when no part of it can be
    cached (a tower of another layout with unlocked blocks must run on images)."""
    visual = model.visual
    if not trainable(visual):
        return visual, nn.Identity()
    trunk, head = getattr(visual, "trunk", None), getattr(visual, "head", None)
    if trunk is None or head is None:
        return None
    if not trainable(trunk):
        return trunk, head  # timm towers (lite0-minilm): LiT-style locked trunk, trainable projection
    return partial_split(visual)  # the trunk's last blocks unlocked: cached activations


class CachedImageFeatures:
    """Fast path: precomputed frozen features, through the trainable head at each call.

    ``flipped``: the same features of the mirrored photos; each call then takes the mirrored
    copy of each row with probability 1/2 (drawn from torch's generator, which training seeds
    and checkpoints): augmentation without decoding a photo."""

    def __init__(self, features: np.ndarray, head: nn.Module, device="cpu", flipped: np.ndarray | None = None):
        self.features = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
        self.flipped = None if flipped is None else torch.from_numpy(np.ascontiguousarray(flipped, dtype=np.float32))
        self.head = head
        self.device = device

    def __call__(self, rows) -> torch.Tensor:
        index = torch.as_tensor(rows, dtype=torch.long)
        chosen = self.features[index]
        if self.flipped is not None:
            mirror = torch.rand(len(index)) < 0.5
            chosen[mirror] = self.flipped[index[mirror]]
        return self.head(chosen.to(self.device))


class Mirrored:
    """A preprocessing that mirrors the photo left to right first (its repr keys the cache)."""

    def __init__(self, preprocess):
        self.preprocess = preprocess

    def __call__(self, image):
        return self.preprocess(ImageOps.mirror(image))

    def __repr__(self) -> str:
        return f"Mirrored({self.preprocess!r})"


class LiveImageFeatures:
    """Slow path: decode the photos and run the whole image tower (with training transforms)."""

    def __init__(self, model, paths, transform, device="cpu"):
        self.model = model
        self.files = ImageFiles(paths, transform)
        self.device = device

    def __call__(self, rows) -> torch.Tensor:
        images = []
        for r in rows:
            _, tensor, error = self.files[int(r)]
            if error is not None:
                raise RuntimeError(f"{self.files.paths[int(r)]}: {error}")
            images.append(tensor)
        batch = torch.stack(images).to(self.device, memory_format=torch.channels_last)
        return self.model.encode_image(batch)

