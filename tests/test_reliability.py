"""Bad input and interrupted or diverging runs: each case named in the reliability table of docs/bad-input.md."""
import os
import stat

import numpy as np
import pandas as pd
import pytest
import torch

from clipft.cache.store import CacheError, EmbeddingStore
from clipft.commands.sample_data import make_catalogue
from clipft.fileio import atomic_write
from conftest import REPO, run


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


def test_prompt_files_with_a_repeated_key_or_not_utf8_are_named(tmp_path):
    from clipft.prompts import PromptFileError, load_prompt_spec

    twice = tmp_path / "twice.yaml"
    twice.write_text("attribute: color\ncolumn: colour\ntemplates: ['{}']\nclasses:\n  Red:\n  Blue:\n  Red: [scarlet]\n")
    with pytest.raises(PromptFileError, match="twice.yaml: not valid YAML.*key 'Red' appears twice"):
        load_prompt_spec(twice)
    utf16 = tmp_path / "u16.yaml"
    utf16.write_text("attribute: color\n", encoding="utf-16")
    with pytest.raises(PromptFileError, match="u16.yaml: not UTF-8 text"):
        load_prompt_spec(utf16)


def test_shipped_prompt_files_and_configs_are_found_by_name(tmp_path, monkeypatch):
    from clipft.prompts import load_prompt_spec
    from clipft.shipped import shipped_names
    from clipft.training.config import ConfigError, load_config

    monkeypatch.chdir(tmp_path)  # no prompts/ folder here
    assert {"color", "category", "gender", "season", "lid", "sleeve"} <= set(shipped_names("prompts"))
    assert load_prompt_spec("color").attribute == "color" and load_prompt_spec("lid.yaml").column == "lid"
    cfg = load_config("align-lite0-minilm")
    assert cfg.catalogue.prompts == ["gender", "category", "color"] and cfg.task.captions == "title"
    with pytest.raises(ConfigError, match="nope: no such file, and not a shipped configs name"):
        load_config("nope")
    (tmp_path / "color").write_text("attribute: mine\ncolumn: c\ntemplates: ['{}']\nclasses: [a, b]\n")
    assert load_prompt_spec("color").attribute == "mine"  # a path that exists wins


@pytest.mark.parametrize("setting,message", [
    ("wise_alphas=[a]", "key 'wise_alphas': expected list[float], got ['a']"),
    ("prompts=[1,2]", "1: no such file, and not a shipped prompts name"),
    ("lr=.nan", "lr: must be a positive number, got nan"),
    ("lr=-0.1", "lr: must be a positive number, got -0.1"),
    ("patience=0", "patience: must be at least 1"),
    ("epochs=[1", "--set 'epochs=[1': the value is not valid YAML"),
])
def test_bad_settings_are_one_line_errors(tmp_path, sample_catalogue, setting, message):
    result = run(["finetune", "--set", f"data={sample_catalogue}", "--set", "prompts=[color]", "--set", setting,
                  "--set", "model=clipft-tiny", "--out", str(tmp_path / "run"), "--quiet"], expect=1)
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_prompt_column_absent_from_the_catalogue_is_reported(tmp_path, sample_catalogue, caplog):
    with caplog.at_level("WARNING"):
        run(["zeroshot", "--prompts", "color", "--prompts", "season", "--data", str(sample_catalogue),
             "--model", "clipft-tiny", "--out", str(tmp_path / "zs"), "--cache-dir", str(tmp_path / "cache")])
    assert "no column 'season'" in caplog.text and "no column 'color'" not in caplog.text


def test_unusable_output_folders_stop_the_run_before_any_work(tmp_path, sample_catalogue):
    args = ["zeroshot", "--prompts", "color", "--data", str(sample_catalogue), "--model", "clipft-tiny",
            "--cache-dir", str(tmp_path / "cache")]
    (tmp_path / "zs" / "predictions.csv").mkdir(parents=True)
    result = run(args + ["--out", str(tmp_path / "zs")], expect=1)
    assert "predictions.csv: is a folder, where clipft writes a file" in result.output
    assert not (tmp_path / "cache").exists()  # nothing was encoded
    (tmp_path / "file").write_text("")
    result = run(args + ["--out", str(tmp_path / "file" / "out")], expect=1)
    assert "cannot write results there" in result.output


def test_degenerate_training_sets_are_refused_or_flagged(tmp_path, caplog):
    data = make_catalogue(tmp_path / "cat", n=40, size=32, seed=1)
    frame = pd.read_csv(data)
    one_colour = data.parent / "one.csv"
    frame.assign(baseColour="Red").to_csv(one_colour, index=False)
    base = ["finetune", "--set", "prompts=[color]", "--set", "model=clipft-tiny", "--set", "epochs=1",
            "--set", f"cache_dir={tmp_path / 'cache'}", "--set", "wise_alphas=[1.0]", "--quiet"]
    result = run(base + ["--set", f"data={one_colour}", "--out", str(tmp_path / "one")], expect=1)
    assert "color: every training example has the caption 'Red'; training needs at least two classes" in result.output
    tiny = data.parent / "tiny.csv"
    frame.head(5).to_csv(tiny, index=False)
    with caplog.at_level("WARNING"):
        run(base + ["--set", f"data={tiny}", "--out", str(tmp_path / "tiny")])
    assert "tiny.csv: only 1 validation product(s): the best epoch is chosen on very few examples" in caplog.text
    no_val = data.parent / "no_val.csv"
    frame.assign(split=["train"] * 30 + ["test"] * 10).to_csv(no_val, index=False)
    result = run(base + ["--set", f"data={no_val}", "--set", "split_column=split", "--out", str(tmp_path / "nv")],
                 expect=1)
    assert "the validation split is empty, so no epoch can be chosen" in result.output


def test_importing_clipft_changes_nothing_in_matplotlib_or_openclip():
    import subprocess
    import sys

    code = ("import matplotlib, open_clip; backend = matplotlib.get_backend(); models = set(open_clip.list_models())\n"
            "import clipft, clipft.cli, clipft.commands.finetune, clipft.commands.predict, clipft.reporting.plots\n"
            "assert matplotlib.get_backend() == backend, matplotlib.get_backend()\n"
            "assert set(open_clip.list_models()) == models and 'lite0-minilm' not in models\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "MPLBACKEND": "svg"})
    assert done.returncode == 0, done.stderr


def test_the_command_line_starts_without_torch_or_openclip():
    """`clipft --help` must not load the heavy libraries (its start-up time is measured by
    benchmarks/cli_startup.py); commands import them when they run."""
    import subprocess
    import sys

    code = ("import sys, clipft, clipft.cli\n"
            "heavy = sorted(m for m in ('torch', 'open_clip', 'transformers', 'pandas', 'sklearn') if m in sys.modules)\n"
            "assert not heavy, heavy\n"
            "assert clipft.OFFLINE_MODEL == 'lite0-minilm' and 'torch' in sys.modules\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
