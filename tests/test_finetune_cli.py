import json

import pandas as pd
import pytest
import torch

from clipft.commands.sample_data import make_catalogue
from conftest import REPO, run


@pytest.mark.slow
def test_finetune_end_to_end_then_zeroshot_with_the_checkpoint(tmp_path):
    data = make_catalogue(tmp_path / "cat", n=36, size=32, seed=3)
    config = tmp_path / "run.yaml"
    config.write_text(
        f"data: {data}\nprompts: [{REPO}/prompts/color.yaml, {REPO}/prompts/lid.yaml]\nmodel: clipft-tiny\n"
        f"epochs: 2\nbatch_size: 8\nlr: 1.0e-3\nwarmup_steps: 1\ncache_dir: {tmp_path / 'cache'}\n"
        f"wise_alphas: [0.0, 0.5, 1.0]\n"
    )
    out = tmp_path / "run"
    result = run(["finetune", "--config", str(config), "--set", "seed=1", "--out", str(out), "--quiet"])
    assert "test split:" in result.output and "zero-shot" in result.output and "fine-tuned" in result.output
    for name in ("config.yaml", "splits.csv", "labels.json", "history.csv", "best.pt", "last.pt",
                 "comparison.csv", "wise_ft.csv", "summary.json", "curves.png"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["fast_path"] is True and summary["splits"]["skipped"] == 0
    assert sum(summary["splits"][s] for s in ("train", "val", "test")) == 36
    assert len(pd.read_csv(out / "history.csv")) == 2
    comparison = pd.read_csv(out / "comparison.csv")
    assert {"zero-shot", "fine-tuned", "majority class"} <= set(comparison["model"])
    assert comparison["accuracy"].between(0, 1).all()
    assert pd.read_csv(out / "wise_ft.csv")["alpha"].tolist() == [0.0, 0.5, 1.0]
    assert "seed: 1" in (out / "config.yaml").read_text()
    splits = pd.read_csv(out / "splits.csv")
    assert (splits.groupby("group")["split"].nunique() == 1).all()

    best = torch.load(out / "best.pt", weights_only=True)
    assert best["epoch"] in (1, 2)
    zs = run(["zeroshot", "--prompts", str(REPO / "prompts" / "color.yaml"), "--data", str(data),
              "--out", str(tmp_path / "zs"), "--model", "clipft-tiny", "--pretrained", str(out / "best.pt"),
              "--workers", "0", "--cache-dir", str(tmp_path / "cache")])
    assert "scored 36 of 36" in zs.output

    # running the same command again finds the finished run and does not train again
    again = run(["finetune", "--config", str(config), "--set", "seed=1", "--out", str(out), "--quiet"])
    assert len(pd.read_csv(out / "history.csv")) == 2 and "best epoch" in again.output


def test_finetune_errors_are_clear(tmp_path):
    result = run(["finetune", "--set", "epochs=1", "--out", str(tmp_path)], expect=1)
    assert "prompts" in result.output
    bad = run(["finetune", "--set", "prompts=[x.yaml]", "--set", "data=nope.csv", "--out", str(tmp_path)], expect=1)
    assert "x.yaml" in bad.output or "nope.csv" in bad.output


def test_finetune_skips_bad_photos_when_asked(tmp_path):
    data = make_catalogue(tmp_path / "cat", n=30, size=32, seed=4)
    frame = pd.read_csv(data, dtype=str)
    (data.parent / frame.loc[3, "image"]).write_bytes(b"broken")
    args = ["finetune", "--set", f"data={data}", "--set", f"prompts=[{REPO}/prompts/color.yaml]",
            "--set", "model=clipft-tiny", "--set", "epochs=1", "--set", "batch_size=8",
            "--set", f"cache_dir={tmp_path / 'cache'}", "--quiet"]
    stopped = run([*args, "--out", str(tmp_path / "a")], expect=1)
    assert "line 5:" in stopped.output and "cannot decode image" in stopped.output
    run([*args, "--set", "skip_bad=true", "--out", str(tmp_path / "b")])
    skipped = pd.read_csv(tmp_path / "b" / "skipped.csv", dtype=str)
    assert skipped["id"].tolist() == [frame.loc[3, "id"]]
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["splits"]["skipped"] == 1


@pytest.mark.slow
def test_finetune_with_a_trainable_image_tower(tmp_path):
    import torch

    from clipft.models import load_model

    data = make_catalogue(tmp_path / "cat", n=24, size=32, seed=5)
    base = ["finetune", "--set", f"data={data}", "--set", f"prompts=[{REPO}/prompts/color.yaml]",
            "--set", "model=clipft-tiny", "--set", "epochs=1", "--set", "batch_size=8",
            "--set", f"cache_dir={tmp_path / 'cache'}", "--set", "wise_alphas=[1.0]", "--quiet"]
    for name, extra in (("unlocked", ["lock_image=false", "augment=true"]), ("partial", ["unlocked_image_groups=1"])):
        out = tmp_path / name
        run([*base, *[a for e in extra for a in ("--set", e)], "--out", str(out)])
        assert json.loads((out / "summary.json").read_text())["fast_path"] is False
        torch.manual_seed(0)
        initial = load_model("clipft-tiny")[0].state_dict()
        trained = torch.load(out / "last.pt", weights_only=True)["state_dict"]
        assert not torch.equal(initial["visual.proj"], trained["visual.proj"])  # the image side trained


def test_finetune_on_fused_titles_reports_the_model_without_titles(tmp_path):
    data = make_catalogue(tmp_path / "cat", n=36, size=32, seed=6)
    out = tmp_path / "run"
    run(["finetune", "--set", f"data={data}", "--set", f"prompts=[{REPO}/prompts/lid.yaml]", "--set", "model=clipft-tiny",
         "--set", "epochs=1", "--set", "batch_size=8", "--set", "title_dropout=0.5", "--set", "wise_alphas=[1.0]",
         "--set", f"cache_dir={tmp_path / 'cache'}", "--out", str(out), "--quiet"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["inputs"] == "fusion"
    assert set(summary["title_weights"]) == {"zero-shot", "fine-tuned"}
    assert 0 <= summary["title_weights"]["fine-tuned"]["lid"] <= 1
    comparison = pd.read_csv(out / "comparison.csv")
    pairs = set(zip(comparison["model"], comparison["titles"]))
    assert {("fine-tuned", "present"), ("fine-tuned", "removed"), ("zero-shot", "removed")} <= pairs
    tuned = comparison[(comparison["model"] == "fine-tuned") & (comparison["titles"] == "present")]["title_weight"]
    assert tuned.tolist() == [summary["title_weights"]["fine-tuned"]["lid"]]
    bad = run(["finetune", "--set", f"data={data}", "--set", "captions=title", "--set", "inputs=fusion",
               "--out", str(tmp_path / "bad")], expect=1)
    assert "inputs" in bad.output and "captions=title" in bad.output
