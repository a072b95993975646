import os

import numpy as np
import pytest
import torch
from PIL import Image

from clipft.cache.encoding import encode_catalogue, encode_images, encode_texts
from clipft.cache.store import EmbeddingStore
from clipft.catalogue import BadImagesError, CatalogueError, load_catalogue
from clipft.commands.sample_data import make_catalogue


def images(tmp_path, n, size=16):
    paths = []
    for i in range(n):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (size, size), (i * 20 % 255, 100, 200)).save(path)
        paths.append(path)
    return paths


class CountingModel(torch.nn.Module):
    """Wraps a model and counts encoded images; can fail after a number of batches."""

    def __init__(self, model, fail_after=None):
        super().__init__()
        self.inner = model
        self.visual = model.visual
        self.images = 0
        self.batches = 0
        self.fail_after = fail_after

    def encode_image(self, x):
        if self.fail_after is not None and self.batches >= self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        self.batches += 1
        self.images += len(x)
        return self.inner.encode_image(x)


def test_second_run_encodes_nothing_and_returns_the_same(tmp_path, tiny_model):
    model, preprocess, _ = tiny_model
    paths = images(tmp_path, 5)
    first = encode_images(CountingModel(model), preprocess, paths, tmp_path / "cache", batch_size=2, progress=False)
    counting = CountingModel(model)
    second = encode_images(counting, preprocess, paths, tmp_path / "cache", batch_size=2, progress=False)
    assert first.encoded == 5 and second.encoded == 0 and counting.images == 0
    np.testing.assert_array_equal(first.embeddings, second.embeddings)
    with torch.no_grad():
        direct = model.encode_image(torch.stack([preprocess(Image.open(p).convert("RGB")) for p in paths]))
    np.testing.assert_allclose(first.embeddings, direct.numpy(), rtol=1e-5, atol=1e-6)


def test_changed_file_is_encoded_again(tmp_path, tiny_model):
    model, preprocess, _ = tiny_model
    paths = images(tmp_path, 3)
    encode_images(model, preprocess, paths, tmp_path / "cache", progress=False)
    Image.new("RGB", (16, 16), (0, 0, 0)).save(paths[1])
    os.utime(paths[1], ns=(1, 1))  # a different mtime even on coarse file systems
    counting = CountingModel(model)
    again = encode_images(counting, preprocess, paths, tmp_path / "cache", progress=False)
    assert again.encoded == 1 and counting.images == 1


def test_other_weights_do_not_share_the_cache(tmp_path, tiny_model):
    from clipft.models import TINY_MODEL, load_model

    model, preprocess, _ = tiny_model
    paths = images(tmp_path, 2)
    encode_images(model, preprocess, paths, tmp_path / "cache", progress=False)
    torch.manual_seed(99)
    other, _, _ = load_model(TINY_MODEL)
    assert encode_images(other, preprocess, paths, tmp_path / "cache", progress=False).encoded == 2


def test_interrupted_run_keeps_finished_work_and_resumes(tmp_path, tiny_model):
    model, preprocess, _ = tiny_model
    paths = images(tmp_path, 7)
    broken = CountingModel(model, fail_after=2)
    with pytest.raises(KeyboardInterrupt):
        encode_images(broken, preprocess, paths, tmp_path / "cache", batch_size=2, shard_size=2, progress=False)
    assert broken.images == 4
    counting = CountingModel(model)
    resumed = encode_images(counting, preprocess, paths, tmp_path / "cache", batch_size=2, progress=False)
    assert counting.images == 3 and resumed.encoded == 3
    assert not np.isnan(resumed.embeddings).any()
    assert not list((tmp_path / "cache").rglob("*.tmp"))


def test_corrupt_and_missing_images_are_reported_not_fatal(tmp_path, tiny_model):
    model, preprocess, _ = tiny_model
    paths = images(tmp_path, 3)
    paths[1].write_bytes(b"not an image")
    paths.append(tmp_path / "gone.png")
    result = encode_images(model, preprocess, paths, tmp_path / "cache", progress=False)
    assert set(result.failed) == {1, 3}
    assert "cannot decode image" in result.failed[1]
    assert "cannot read file" in result.failed[3]
    assert result.ok.tolist() == [True, False, True, False]
    assert np.isnan(result.embeddings[1]).all() and not np.isnan(result.embeddings[0]).any()


def test_a_catalogue_photo_that_fails_to_decode_is_a_bad_images_error_naming_its_line(tmp_path, tiny_model):
    model, preprocess, _ = tiny_model
    catalogue = load_catalogue(make_catalogue(tmp_path / "catalogue", n=6, size=32, seed=0))
    catalogue.image_paths[4].write_bytes(b"not an image")
    with pytest.raises(BadImagesError) as err:
        encode_catalogue(model, preprocess, catalogue, cache_dir=tmp_path / "cache", progress=False)
    assert isinstance(err.value, CatalogueError)  # the catalogue's to fix: callers and the CLI treat it as one
    assert [(b.row, b.line) for b in err.value.bad] == [(4, 6)] and "cannot decode image" in err.value.bad[0].reason
    assert str(err.value).startswith(f"{catalogue.source}: 1 image(s) missing or unreadable:\n  line 6: ")
    skipped = encode_catalogue(model, preprocess, catalogue, skip_bad=True, cache_dir=tmp_path / "cache", progress=False)
    assert skipped.rows.tolist() == [0, 1, 2, 3, 5] and [b.row for b in skipped.skipped] == [4]


def test_workers_give_the_same_embeddings(tmp_path, tiny_model):
    model, preprocess, _ = tiny_model
    paths = images(tmp_path, 4)
    serial = encode_images(model, preprocess, paths, tmp_path / "a", progress=False)
    parallel = encode_images(model, preprocess, paths, tmp_path / "b", workers=2, batch_size=2, progress=False)
    np.testing.assert_allclose(serial.embeddings, parallel.embeddings, rtol=1e-5, atol=1e-6)


def test_text_embeddings_are_cached(tmp_path, tiny_model):
    model, _, tokenizer = tiny_model
    texts = ["red", "blue", "red"]
    first = encode_texts(model, tokenizer, texts, tmp_path)
    store_files = list((tmp_path / "text").rglob("shard-*.keys.npy"))
    assert len(store_files) == 1
    second = encode_texts(model, tokenizer, texts, tmp_path)
    assert list((tmp_path / "text").rglob("shard-*.keys.npy")) == store_files  # nothing new written
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first[0], first[2])


def test_store_reopens_and_skips_an_unreadable_shard(tmp_path, caplog):
    store = EmbeddingStore(tmp_path)
    store.add(["a", "b"], np.eye(2, dtype=np.float32))
    (tmp_path / "shard-0-broken.keys.npy").write_bytes(b"garbage")
    reopened = EmbeddingStore(tmp_path)
    assert len(reopened) == 2 and "a" in reopened
    np.testing.assert_array_equal(reopened.get(["b", "a"]), [[0, 1], [1, 0]])
    assert "ignoring unreadable cache shard" in caplog.text
    with pytest.raises(ValueError, match="2 keys for 1"):
        store.add(["x", "y"], np.zeros((1, 2)))


def test_store_memory_maps_finished_shards_and_ignores_unfinished_ones(tmp_path):
    store = EmbeddingStore(tmp_path)
    store.add(["a", "b", "c"], np.arange(6, dtype=np.float32).reshape(3, 2))
    np.save(tmp_path / "shard-9-unfinished.emb.npy", np.ones((1, 2), dtype=np.float32))  # no keys file
    reopened = EmbeddingStore(tmp_path)
    assert len(reopened) == 3 and any(isinstance(s, np.memmap) for s in reopened._shards)
    np.testing.assert_array_equal(reopened.get(["c", "a", "c"]), [[4, 5], [0, 1], [4, 5]])
    assert reopened.get([]).shape == (0, 2)


def test_a_photo_named_by_many_rows_is_encoded_once_and_given_to_each(tmp_path, tiny_model):
    model, preprocess, _ = tiny_model
    distinct = images(tmp_path, 3)
    rows = [distinct[i] for i in (2, 0, 2, 2, 1, 0)] + [tmp_path / "gone.png", distinct[1]]
    counting = CountingModel(model)
    result = encode_images(counting, preprocess, rows, tmp_path / "cache", batch_size=2, progress=False)
    assert counting.images == 3 and result.encoded == 3
    alone = encode_images(model, preprocess, distinct, tmp_path / "cache", progress=False).embeddings
    np.testing.assert_array_equal(result.embeddings[[0, 1, 2, 3, 4, 5, 7]], alone[[2, 0, 2, 2, 1, 0, 1]])
    assert set(result.failed) == {6} and np.isnan(result.embeddings[6]).all()


def test_tower_fingerprints_are_remembered_until_the_weights_change(tiny_model):
    import copy

    from clipft.models import tower_fingerprint

    model = copy.deepcopy(tiny_model[0])
    start = tower_fingerprint(model, "image")
    assert tower_fingerprint(model, "image") == start
    original = copy.deepcopy(model.state_dict())
    with torch.no_grad():
        next(model.visual.parameters()).add_(1.0)  # an optimiser step changes weights in place
    changed = tower_fingerprint(model, "image")
    assert changed != start and tower_fingerprint(model, "text") == tower_fingerprint(tiny_model[0], "text")
    model.load_state_dict(original)
    assert tower_fingerprint(model, "image") == start


def test_prefetching_keeps_order_and_hands_errors_to_the_consumer():
    from clipft.cache.encoding import prefetched

    assert list(prefetched(iter(range(50)), depth=2)) == list(range(50))

    def failing():
        yield 1
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        list(prefetched(failing()))
    stream = prefetched(iter(range(1000)))
    assert next(stream) == 0
    stream.close()  # a consumer that stops early releases the producer
