import json
import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from clipft.commands.sample_data import make_catalogue
from clipft.labeller import Labeller, LabellerError
from conftest import REPO, run

PROMPTS = f"[{REPO}/prompts/color.yaml, {REPO}/prompts/lid.yaml]"


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    return make_catalogue(tmp_path_factory.mktemp("labeller-cat"), n=60, size=32, seed=4)


def split_csv(data, run_dir, split="test"):
    """The catalogue's rows of one split of a run, as a CSV beside the catalogue (same image paths)."""
    frame = pd.read_csv(data, dtype=str)
    splits = pd.read_csv(run_dir / "splits.csv", dtype=str)
    path = data.parent / f"{run_dir.name}-{split}.csv"
    frame[frame["id"].isin(splits.loc[splits["split"] == split, "id"])].to_csv(path, index=False)
    return path


def finetune(tmp_path, data, name, *overrides):
    out = tmp_path / name
    run(["finetune", "--set", f"data={data}", "--set", f"prompts={PROMPTS}", "--set", "model=clipft-tiny",
         "--set", "epochs=2", "--set", "batch_size=8", "--set", "lr=1e-3", "--set", "warmup_steps=1",
         "--set", f"cache_dir={tmp_path / 'cache'}", *[a for o in overrides for a in ("--set", o)],
         "--out", str(out), "--quiet"])
    return out


def predicted_accuracy(tmp_path, run_dir, data, name):
    out = tmp_path / f"predict-{name}"
    run(["predict", "--run", str(run_dir), "--data", str(split_csv(data, run_dir)), "--out", str(out),
         "--cache-dir", str(tmp_path / "cache")])
    return json.loads((out / "metrics.json").read_text())["attributes"], out


@pytest.mark.parametrize("name, overrides", [
    ("fusion-wise", ("wise_alphas=[0.0, 0.5]", "title_dropout=0.5")),
    ("image-finetuned", ("inputs=image", "wise_alphas=[1.0]")),
    ("image-template-wise", ("inputs=image", "captions=template", "wise_alphas=[0.5]")),
])
def test_predict_reproduces_the_test_comparison_of_a_finetune_run(tmp_path, catalogue, name, overrides):
    run_dir = finetune(tmp_path, catalogue, name, *overrides)
    manifest = json.loads((run_dir / "labeller.json").read_text())
    chosen = manifest["reproduces"]
    comparison = pd.read_csv(run_dir / "comparison.csv")
    rows = comparison[(comparison["model"] == chosen["model"]) & (comparison["titles"] == "present")]
    assert np.isclose(rows["alpha"], chosen["alpha"]).all() and len(rows) == 2
    counts = json.loads((run_dir / "labels.json").read_text())
    for attribute, entry in manifest["attributes"].items():  # the fine-tuned scores add the training prior
        classes = list(entry["prompts"]["classes"])
        seen = np.array([counts[attribute].get(c, 0) for c in classes], dtype=float)
        np.testing.assert_allclose(entry["log_prior"], np.log((seen + 1) / (seen.sum() + len(classes))), rtol=1e-6)
    metrics, out = predicted_accuracy(tmp_path, run_dir, catalogue, name)
    for row in rows.itertuples():
        assert metrics[row.attribute]["n"] == row.n
        assert metrics[row.attribute]["accuracy"] == pytest.approx(row.accuracy, abs=1e-6)
    predictions = pd.read_csv(out / "predictions.csv")
    assert set(predictions["color_status"]) <= {"auto", "review"}
    review = pd.read_csv(out / "review.csv")
    assert len(review) == (predictions[["color_status", "lid_status"]] == "review").to_numpy().sum()
    assert review["probability"].is_monotonic_increasing  # most uncertain first


def test_predict_reproduces_a_probe_run_and_loads_without_pickle(tmp_path, catalogue, monkeypatch):
    out = tmp_path / "probe"
    run(["probe", "--set", f"data={catalogue}", "--set", f"prompts={PROMPTS}", "--set", "model=clipft-tiny",
         "--set", f"cache_dir={tmp_path / 'cache'}", "--classifier", "logistic", "--classifier", "forest",
         "--inputs", "fusion", "--out", str(out), "--quiet"])
    manifest = json.loads((out / "labeller.json").read_text())
    probe = pd.read_csv(out / "probe.csv")
    metrics, _ = predicted_accuracy(tmp_path, out, catalogue, "probe")
    for attribute, classifier in manifest["reproduces"]["classifiers"].items():
        row = probe[(probe["attribute"] == attribute) & (probe["classifier"] == classifier) & (probe["titles"] == "present")]
        assert metrics[attribute]["accuracy"] == pytest.approx(float(row["accuracy"].iloc[0]), abs=1e-6)

    def refuse(*args, **kwargs):
        raise AssertionError("a labeller must load without unpickling")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    labeller = Labeller.load(out)
    images = [Image.new("RGB", (32, 32), (200, 30, 35)), Image.new("RGB", (32, 32), (40, 80, 200))]
    proba = labeller.predict_proba(images, titles=["Acme Red Mug", None])
    assert set(proba) == {"color", "lid"} and proba["color"].shape[0] == 2
    np.testing.assert_allclose(proba["color"].sum(axis=1), 1, rtol=1e-5)
    titles = ["Acme Red Mug", None]
    assert list(labeller.predict(images, titles)["color"]) == list(labeller.heads["color"].classes[proba["color"].argmax(1)])


def test_a_folder_that_is_not_a_finished_run_is_refused(tmp_path, catalogue):
    with pytest.raises(LabellerError, match="not a finished finetune or probe run"):
        Labeller.load(tmp_path)
    result = run(["predict", "--run", str(tmp_path), "--data", str(catalogue), "--out", str(tmp_path / "p")], expect=1)
    assert "not a finished finetune or probe run" in result.output
    (tmp_path / "labeller.json").write_text('{"format": "something else"}')
    with pytest.raises(LabellerError, match="not a clipft labeller"):
        Labeller.load(tmp_path)


def test_predict_with_no_label_columns_and_a_target_precision(tmp_path, catalogue):
    run_dir = finetune(tmp_path, catalogue, "plain", "inputs=image", "wise_alphas=[1.0]")
    unlabelled = catalogue.parent / "unlabelled.csv"
    pd.read_csv(catalogue, dtype=str)[["id", "image"]].to_csv(unlabelled, index=False)
    out = tmp_path / "unlabelled"
    run(["predict", "--run", str(run_dir), "--data", str(unlabelled), "--out", str(out), "--attributes", "color",
         "--target-precision", "0.5", "--chunk-size", "25", "--cache-dir", str(tmp_path / "cache")])
    predictions = pd.read_csv(out / "predictions.csv")
    assert len(predictions) == 60 and "lid" not in predictions and "color_status" in predictions
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["attributes"] == {} and metrics["calibration"]["color"]["target_precision"] == 0.5
    tasks = json.loads((out / "review_labelstudio.json").read_text())
    review = pd.read_csv(out / "review.csv")
    assert len(tasks) == review["id"].nunique()
    if tasks:
        assert tasks[0]["predictions"][0]["result"][0]["from_name"] == "baseColour"
    assert '<Choices name="baseColour"' in (out / "labelstudio_config.xml").read_text()
    bad = run(["predict", "--run", str(run_dir), "--data", str(unlabelled), "--out", str(out), "--attributes", "nope"],
              expect=1)
    assert "--attributes: nope" in bad.output
