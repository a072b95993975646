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

from ..fileio import atomic_write, remove_stale_temporaries

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
        if self.folder is None:
            return
        blocking = next((p for p in (self.folder, *self.folder.parents) if p.exists() and not p.is_dir()), None)
        if blocking is not None:
            raise CacheError(f"{blocking}: is a file where the embedding cache needs a folder; remove it or choose "
                             f"another --cache-dir (or CLIPFT_CACHE)")
        if not self.folder.is_dir():
            return
        remove_stale_temporaries(self.folder)
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
            self._check_width(emb, shard)
            self._append(keys.tolist(), emb, str(shard))

    def _check_width(self, emb: np.ndarray, shard: Path) -> None:
        # one store holds one model's embeddings; a shard of another width was put here by hand
        if self._shards and emb.shape[1:] != self._shards[0].shape[1:]:
            raise CacheError(f"{shard}: holds embeddings {emb.shape[1:]} wide where {self._names[0]} holds "
                             f"{self._shards[0].shape[1:]}: it comes from another model; delete it (and its "
                             f".emb.npy) to recompute")

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
            source = self._write_shard(keys, emb)
        self._append(list(keys), emb, source)

    def _write_shard(self, keys: list[str], emb: np.ndarray) -> str:
        """Write one shard (embeddings, then keys); a cache that cannot be written is one line
        naming it, and what is already cached stays usable."""
        name = f"shard-{time.time_ns():020d}-{os.getpid()}"
        try:
            with atomic_write(self.folder / f"{name}.emb.npy", "wb") as f:
                np.save(f, emb)
            with atomic_write(self.folder / f"{name}.keys.npy", "wb") as f:
                np.save(f, np.asarray(keys, dtype=str))
        except OSError as err:
            (self.folder / f"{name}.emb.npy").unlink(missing_ok=True)
            raise CacheError(f"{err.filename or self.folder}: cannot write to the embedding cache ({err.strerror}); "
                             f"free some space, or pass --cache-dir (or set CLIPFT_CACHE) to a writable folder; "
                             f"what is cached stays usable") from None
        return str(self.folder / f"{name}.keys.npy")
