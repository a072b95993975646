"""An on-disk, append-only store of embeddings keyed by strings.

Each write is a new shard file moved into place atomically, so an interrupted run leaves
every finished shard readable and nothing half-written; the next run reads the shards back
as one table and computes only what is missing.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np

from ..fileio import atomic_write

log = logging.getLogger(__name__)


class CacheError(ValueError):
    """An embedding cache that cannot be used; the message names the shard."""


def default_cache_dir() -> Path:
    return Path(os.environ.get("CLIPFT_CACHE", Path.home() / ".cache" / "clipft"))


class EmbeddingStore:
    """``folder=None`` keeps the embeddings in memory only (for weights that are still changing).

    A shard is ``shard-<id>.emb.npy`` (the embeddings, memory-mapped when read, so a cache
    larger than memory costs only what is touched) and ``shard-<id>.keys.npy``, written last:
    a shard without its keys file is unfinished and ignored.
    """

    def __init__(self, folder: str | os.PathLike | None):
        self.folder = Path(folder) if folder is not None else None
        self._rows: dict[str, tuple[int, int]] = {}
        self._shards: list[np.ndarray] = []
        self._names: list[str] = []  # where each shard came from, for error messages
        self._load()

    def _load(self) -> None:
        if self.folder is None or not self.folder.is_dir():
            return
        for shard in sorted(self.folder.glob("shard-*.keys.npy")):
            try:
                keys = np.load(shard, allow_pickle=False)
                emb = np.load(shard.with_name(shard.name.replace(".keys.npy", ".emb.npy")), mmap_mode="r")
                if len(keys) != len(emb):
                    raise ValueError(f"{len(keys)} keys for {len(emb)} embeddings")
            except (OSError, ValueError, EOFError) as err:
                # Atomic writes make this rare (a disk error, a hand edit); recomputing is safe.
                log.warning("ignoring unreadable cache shard %s (%s); its entries will be recomputed", shard, err)
                continue
            self._append(keys.tolist(), emb, str(shard))

    def _append(self, keys: list[str], emb: np.ndarray, name: str = "<memory>") -> None:
        shard = len(self._shards)
        self._shards.append(emb)
        self._names.append(name)
        for row, key in enumerate(keys):
            self._rows[key] = (shard, row)

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, key: str) -> bool:
        return key in self._rows

    def get(self, keys: list[str]) -> np.ndarray:
        """Embeddings of keys that are all present, in order."""
        where = np.array([self._rows[k] for k in keys], dtype=np.int64).reshape(-1, 2)
        if not len(where):
            return np.zeros((0, self._shards[0].shape[1] if self._shards else 0), dtype=np.float32)
        out = np.empty((len(where), self._shards[where[0, 0]].shape[1]), dtype=np.float32)
        for shard in np.unique(where[:, 0]):
            mine = where[:, 0] == shard
            out[mine] = self._shards[shard][where[mine, 1]]
            if not np.isfinite(out[mine]).all():
                raise CacheError(f"{self._names[shard]}: cache shard holds non-finite embeddings; delete it and "
                                 f"run again to recompute them")
        return out

    def add(self, keys: list[str], emb: np.ndarray) -> None:
        if not keys:
            return
        emb = np.ascontiguousarray(emb, dtype=np.float32)
        if len(keys) != len(emb):
            raise ValueError(f"{len(keys)} keys for {len(emb)} embeddings")
        if not np.isfinite(emb).all():
            raise CacheError(f"refusing to cache non-finite embeddings (first key {keys[0]!r}): the model gives NaN or inf")
        source = "<memory>"
        if self.folder is not None:
            name = f"shard-{time.time_ns():020d}-{os.getpid()}"
            with atomic_write(self.folder / f"{name}.emb.npy", "wb") as f:
                np.save(f, emb)
            source = str(self.folder / f"{name}.keys.npy")
            with atomic_write(source, "wb") as f:
                np.save(f, np.asarray(keys, dtype=str))
        self._append(list(keys), emb, source)
