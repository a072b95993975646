"""Batched image and text encoding, cached on disk.

Image embeddings are keyed by (image-tower weights, preprocessing, file path + size + mtime):
any later command, attribute or fine-tuned text tower reuses them, and an edited photo is
encoded again. Embeddings are stored as the model outputs them (not normalised).
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..catalogue import BadImage, BadImagesError, Catalogue, ImageFiles, check_images, collate_decoded
from ..distributed import all_gather_objects, barrier, current_world
from ..precision import cache_tag, prepared_encoder
from .store import EmbeddingStore, default_cache_dir
from ..models import tower_fingerprint


@dataclass
class ImageEncoding:
    """Embeddings for a list of images; rows that failed are NaN and listed in ``failed``."""

    embeddings: np.ndarray
    failed: dict[int, str] = field(default_factory=dict)
    encoded: int = 0  # how many were computed in this call (the rest came from the cache)

    @property
    def ok(self) -> np.ndarray:
        mask = np.ones(len(self.embeddings), dtype=bool)
        mask[list(self.failed)] = False
        return mask


@dataclass
class CatalogueEncoding:
    """Image embeddings of a catalogue's usable rows."""

    rows: np.ndarray  # catalogue rows whose photo was read
    embeddings: np.ndarray  # (len(rows), d)
    skipped: list[BadImage]  # rows whose photo was missing or could not be decoded
    encoded: int  # computed in this call (the rest came from the cache)


def short_hash(*parts: str) -> str:
    return hashlib.blake2b("\n".join(parts).encode(), digest_size=12).hexdigest()


# How photos are decoded (catalogue.to_rgb); a change here must not reuse embeddings of the old decoding.
DECODING = "exif+alpha-on-white+16bit-scaled"


def image_store(model, preprocess, cache_dir: str | os.PathLike | None) -> EmbeddingStore:
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    # The tower's structure beside its weights: modules without weights (pooling, the pooled
    # stages and colour histogram of clipft.multiscale) change its output and no weight.
    return EmbeddingStore(root / "image" / short_hash(tower_fingerprint(model, "image"), repr(model.visual),
                                                      repr(preprocess), DECODING, *cache_tag()))


def tokenizer_id(tokenizer) -> str:
    # The default repr holds a memory address; the cache key must survive restarts.
    inner = getattr(tokenizer, "tokenizer", None)
    return f"{type(tokenizer).__name__}|{getattr(tokenizer, 'context_length', '')}|{getattr(inner, 'name_or_path', '')}"


def distinct_values(values) -> tuple[np.ndarray, list]:
    """(position of each value among the distinct ones, the distinct values in first-seen
    order): catalogues repeat photos and titles, so each is looked up and encoded once."""
    inverse, distinct = pd.factorize(pd.Series(list(values), dtype=object))
    return inverse, list(distinct)


def file_key(path: Path) -> str:
    """The photo's real path, size and modification time: a changed file is a new key."""
    stat = path.stat()
    return f"{_real_path(str(path))}|{stat.st_size}|{stat.st_mtime_ns}"


@functools.lru_cache(maxsize=1 << 20)
def _real_path(path: str) -> str:
    # Resolving symlinks costs a system call per folder of the path; a chunked catalogue asks
    # for the same photos chunk after chunk (the file's size and time are still read each time).
    return str(Path(path).resolve())


def _encode_into(store: EmbeddingStore, model, preprocess, paths: list[Path], keys: list[str], device, batch_size: int,
                 workers: int, shard_size: int, progress: bool, on_failure) -> None:
    """Decode and encode ``paths`` into ``store``, a shard every ``shard_size`` images and one
    more when the pass stops for any reason; ``on_failure(position, reason)`` hears of photos
    that fail to decode."""
    loader = torch.utils.data.DataLoader(ImageFiles(paths, preprocess), batch_size=batch_size, num_workers=workers,
                                         collate_fn=collate_decoded)
    encoder, precision_context = prepared_encoder(model, device)
    pending_keys: list[str] = []
    pending: list[np.ndarray] = []
    try:
        with torch.no_grad(), tqdm(total=len(paths), unit="img", desc="Encoding images", disable=not progress) as bar:
            for local, batch, bad in (prefetched(loader) if workers == 0 else loader):
                for j, reason in bad:
                    on_failure(j, reason)
                if batch is not None:
                    with precision_context:
                        features = encoder.encode_image(batch.to(device, memory_format=torch.channels_last))
                    pending_keys.extend(keys[j] for j in local)
                    pending.append(features.float().cpu().numpy())
                bar.update(len(local) + len(bad))
                if len(pending_keys) >= shard_size:
                    store.add(pending_keys, np.concatenate(pending))
                    pending_keys, pending = [], []
    finally:
        if pending_keys:
            store.add(pending_keys, np.concatenate(pending))


def encode_images(
    model,
    preprocess,
    paths,
    cache_dir: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 64,
    workers: int = 0,
    shard_size: int = 2048,
    progress: bool = True,
) -> ImageEncoding:
    """Encode image files with ``model.encode_image``, computing only what the cache lacks.

    Finished embeddings are written to the cache every ``shard_size`` images and when the
    pass stops for any reason, so an interrupted run resumes where it stopped. Under torchrun
    each rank encodes every N-th missing image into shards of its own; all ranks then read the
    whole cache, so a rank that dies loses only its unfinished shard. A file named by several
    rows is read, checked and looked up once.
    """
    inverse, distinct = distinct_values([os.fspath(p) for p in paths])
    encoding = _encode_distinct([Path(p) for p in distinct], model, preprocess, cache_dir, device, batch_size,
                                workers, shard_size, progress)
    if not len(inverse):
        return encoding
    failed = {}
    if encoding.failed:
        failed = {int(row): encoding.failed[int(inverse[row])]
                  for row in np.flatnonzero(np.isin(inverse, list(encoding.failed)))}
    return ImageEncoding(encoding.embeddings[inverse], failed, encoding.encoded)


def _encode_distinct(paths: list[Path], model, preprocess, cache_dir, device, batch_size: int, workers: int,
                     shard_size: int, progress: bool) -> ImageEncoding:
    world = current_world()
    barrier()  # every rank reads the same cache before any rank adds to it...
    store = image_store(model, preprocess, cache_dir)
    barrier()  # ...so that all agree on what is missing and share it out the same way
    failed: dict[int, str] = {}
    keys: list[str | None] = []
    for i, path in enumerate(paths):
        try:
            keys.append(file_key(path))
        except OSError as err:
            keys.append(None)
            failed[i] = f"cannot read file ({err.strerror or err})"
    todo_all = [i for i, k in enumerate(keys) if k is not None and k not in store]
    todo = todo_all[world.rank :: world.size]  # under torchrun each rank encodes its share

    if todo:
        _encode_into(store, model, preprocess, [paths[i] for i in todo], [keys[i] for i in todo], device, batch_size,
                     workers, shard_size, progress and world.main, lambda j, reason: failed.__setitem__(todo[j], reason))
    encoded = len(todo) - sum(1 for i in todo if i in failed)
    if world.size > 1:
        # Every rank's shards are on disk once all have finished: read them as one cache.
        barrier()
        for part in all_gather_objects(failed):
            failed.update(part)
        encoded = sum(all_gather_objects(encoded))
        store = EmbeddingStore(store.folder)

    good = [i for i, k in enumerate(keys) if i not in failed]
    if not good:
        return ImageEncoding(np.full((len(paths), 0), np.nan, dtype=np.float32), failed, encoded)
    found = store.get([keys[i] for i in good])
    out = np.full((len(paths), found.shape[1]), np.nan, dtype=np.float32)
    out[good] = found
    return ImageEncoding(out, failed, encoded=encoded)


def encode_texts(
    model,
    tokenizer,
    texts: list[str],
    cache_dir: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 256,
    cache: bool = True,
) -> np.ndarray:
    """Encode texts with ``model.encode_text``, cached per text-tower weights and tokenizer
    (``cache=False``: in memory only, for a text tower that is being trained)."""
    store, encoder, precision_context = EmbeddingStore(None), model, contextlib.nullcontext()
    if cache:  # a frozen tower: encoded at the current precision (a training tower stays exact)
        root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        store = EmbeddingStore(root / "text" / short_hash(tower_fingerprint(model, "text"), tokenizer_id(tokenizer),
                                                          *cache_tag()))
    inverse, distinct = distinct_values(texts)
    todo = sorted(t for t in distinct if t not in store)
    if todo:
        if cache:
            encoder, precision_context = prepared_encoder(model, device)
        chunks = []
        with torch.no_grad(), precision_context:
            for start in range(0, len(todo), batch_size):
                tokens = tokenizer(todo[start : start + batch_size]).to(device)
                chunks.append(encoder.encode_text(tokens).float().cpu().numpy())
        store.add(todo, np.concatenate(chunks))
    return store.get(distinct)[inverse]


def encode_catalogue(model, preprocess, catalogue: Catalogue, skip_bad: bool = False, cache_dir=None,
                     device="cpu", batch_size: int = 64, workers: int = 0, progress: bool = True) -> CatalogueEncoding:
    """Encode every photo of a catalogue (through the cache).

    Missing files stop the run before any work; photos that fail to decode stop it after the
    pass (the good embeddings are cached by then), unless ``skip_bad`` is set: either way with
    a :class:`~clipft.catalogue.BadImagesError` listing them.
    """
    check_images(catalogue, skip_bad)
    candidates = np.setdiff1d(np.arange(len(catalogue)), np.array([b.row for b in catalogue.missing], dtype=int))
    paths = catalogue.image_paths
    encoding = encode_images(model, preprocess, [paths[r] for r in candidates.tolist()], cache_dir, device,
                             batch_size=batch_size, workers=workers, progress=progress)
    undecodable = [BadImage(int(candidates[i]), catalogue.lines[candidates[i]], catalogue.image_name(int(candidates[i])),
                            reason) for i, reason in sorted(encoding.failed.items())]
    if undecodable and not skip_bad:
        raise BadImagesError(catalogue.source, undecodable)
    skipped = sorted(catalogue.missing + undecodable, key=lambda b: b.row)
    return CatalogueEncoding(candidates[encoding.ok], encoding.embeddings[encoding.ok], skipped, encoding.encoded)


def prefetched(batches: Iterable, depth: int = 2) -> Iterator:
    """``batches`` produced by a background thread, ``depth`` ahead: photos of the next batch
    decode while the model encodes this one (PIL and PyTorch both release the GIL), which on a
    few cores beats decoding processes that compete with the model for memory and cores."""
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def offer(entry) -> bool:
        while not stop.is_set():
            try:
                slots.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False  # the consumer has gone

    def produce():
        try:
            for item in batches:
                if not offer((item, None)):
                    return
            offer((done, None))
        except BaseException as err:  # handed to the consumer, which raises it
            offer((done, err))

    thread = threading.Thread(target=produce, daemon=True, name="clipft-decode")
    thread.start()
    try:
        while True:
            item, err = slots.get()
            if err is not None:
                raise err
            if item is done:
                return
            yield item
    finally:
        stop.set()
