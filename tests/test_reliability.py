"""Bad input and interrupted or diverging runs: each case named in the README's reliability table."""
import os
import stat

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from clipft.cache.store import CacheError, EmbeddingStore
from clipft.cli import cli
from clipft.commands.sample_data import make_catalogue
from clipft.fileio import atomic_write
from conftest import REPO


def run(args, expect=0):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == expect, result.output + repr(result.exception)
    return result


def test_outputs_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "out.csv") as f:
            f.write("x\n")
        EmbeddingStore(tmp_path / "cache").add(["a"], np.ones((1, 2)))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out.csv").stat().st_mode) == 0o644
    assert {stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "cache").iterdir()} == {0o644}


def test_the_cache_refuses_non_finite_embeddings_and_skips_empty_shards(tmp_path, caplog):
    store = EmbeddingStore(tmp_path)
    with pytest.raises(CacheError, match="non-finite"):
        store.add(["a"], np.array([[np.nan, 1.0]]))
    store.add(["b"], np.ones((1, 2)))
    (tmp_path / "shard-0-empty.keys.npy").write_bytes(b"")  # a 0-byte shard
    assert len(EmbeddingStore(tmp_path)) == 1 and "ignoring unreadable cache shard" in caplog.text
    # A shard whose embeddings were overwritten with NaN is named, not silently scored.
    emb = next(tmp_path.glob("shard-*-*.emb.npy"))
    np.save(emb, np.full((1, 2), np.nan, dtype=np.float32))
    with pytest.raises(CacheError, match="non-finite"):
        EmbeddingStore(tmp_path).get(["b"])


def test_a_diverging_run_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    data = make_catalogue(tmp_path / "cat", n=36, size=32, seed=3)
    args = ["finetune", "--set", f"data={data}", "--set", f"prompts=[{REPO}/prompts/color.yaml]",
            "--set", "model=clipft-tiny", "--set", "batch_size=8", "--set", "validate_start=true",
            "--set", f"cache_dir={tmp_path / 'cache'}", "--set", "wise_alphas=[1.0]", "--quiet"]
    bad = run(args + ["--set", "lr=1e9", "--set", "grad_clip=0", "--set", "epochs=3", "--out", str(tmp_path / "run")],
              expect=1)
    assert "the last good checkpoint is kept" in bad.output and "Traceback" not in bad.output
    best = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    assert best["epoch"] == 0  # the starting weights, validated before training
    assert all(torch.isfinite(v).all() for v in best["state_dict"].values() if v.is_floating_point())


def test_checkpoints_that_are_not_checkpoints_or_not_finite_are_refused(tmp_path, tiny_model):
    from clipft.models import ModelLoadError, load_model

    (tmp_path / "notes.pt").write_text("not a checkpoint")
    with pytest.raises(ModelLoadError, match="not a checkpoint of clipft-tiny"):
        load_model("clipft-tiny", str(tmp_path / "notes.pt"))
    state = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
             for k, v in tiny_model[0].state_dict().items()}
    torch.save({"state_dict": state}, tmp_path / "nan.pt")
    with pytest.raises(ModelLoadError, match="not finite"):
        load_model("clipft-tiny", str(tmp_path / "nan.pt"))
    lite = tmp_path / "lite.pt"
    torch.save({"state_dict": tiny_model[0].state_dict()}, lite)
    with pytest.raises(ModelLoadError, match="not a checkpoint of lite0-minilm"):
        load_model("lite0-minilm", str(lite))


def test_photos_are_converted_as_a_person_sees_them():
    from PIL import Image

    from clipft.catalogue import to_rgb

    grey16 = Image.fromarray(np.full((4, 4), 32768, dtype=np.uint16))  # mid grey in 16 bits
    assert to_rgb(grey16).getpixel((0, 0)) == (127, 127, 127)
    cutout = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red
    cutout.putpixel((0, 0), (255, 0, 0, 255))
    rgb = to_rgb(cutout)
    assert rgb.getpixel((1, 1)) == (255, 255, 255) and rgb.getpixel((0, 0)) == (255, 0, 0)
    tall = Image.new("RGB", (4, 8))
    exif = tall.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees to display
    rotated = to_rgb(Image.open(_saved(tall, exif)))
    assert rotated.size == (8, 4)


def _saved(img, exif):
    import io

    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", exif=exif)
    buffer.seek(0)
    return buffer
