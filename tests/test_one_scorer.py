"""Zero-shot and trained runs label a catalogue through one labeller, one chunk loop and one
writer: the same columns, the same rule, and a labeller that is built, never changed."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from clipft.catalogue import load_catalogue
from clipft.commands.sample_data import make_catalogue
from clipft.labeller import Labeller
from conftest import REPO, run, tiny_finetune

PROMPTS = [str(REPO / "prompts" / f"{name}.yaml") for name in ("color", "lid")]


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    return make_catalogue(tmp_path_factory.mktemp("cat"), n=30, size=32, seed=3)


def test_a_zero_shot_labeller_and_clipft_zeroshot_write_identical_predictions(tmp_path, catalogue):
    out = tmp_path / "z"
    run(["zeroshot", *[a for p in PROMPTS for a in ("--prompts", p)], "--data", str(catalogue), "--out", str(out),
         "--model", "clipft-tiny", "--cache-dir", str(tmp_path / "cache"), "--device", "cpu", "--chunk-size", "7"])
    written = pd.read_csv(out / "predictions.csv", dtype=str, keep_default_na=False)

    torch.manual_seed(0)  # clipft-tiny starts from random weights, seeded as zeroshot seeds them (--seed 0)
    labeller = Labeller.from_prompts(PROMPTS, "clipft-tiny", None, "cpu", tmp_path / "cache2")
    proba = labeller.predict_proba(load_catalogue(catalogue), progress=False)
    for name, p in proba.items():
        labelled = (written[f"{name}_status"] != "n/a").to_numpy()  # lid applies to mugs and pans alone
        assert written[name][labelled].tolist() == list(labeller.heads[name].classes[p.argmax(axis=1)][labelled])
        np.testing.assert_allclose(written[f"{name}_prob"][labelled].astype(float), np.round(p.max(axis=1), 4)[labelled],
                                   atol=1e-4)
        assert set(written[f"{name}_status"][labelled]) == {"review"}  # nothing calibrates a zero-shot labeller
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["calibration"] == {} and metrics["attributes"]["color"]["n"] == 30
    assert (out / "confusion_color.png").is_file() and (out / "mistakes.csv").is_file()
    assert not (out / "review.csv").exists()  # a queue of every label would be the catalogue itself


def test_zeroshot_and_predict_write_the_same_columns(tmp_path, catalogue):
    run_dir = tiny_finetune(catalogue, tmp_path / "ft", tmp_path / "cache")
    run(["predict", "--run", str(run_dir), "--data", str(catalogue), "--out", str(tmp_path / "p"),
         "--cache-dir", str(tmp_path / "cache")])
    run(["zeroshot", *[a for p in PROMPTS for a in ("--prompts", p)], "--data", str(catalogue), "--out",
         str(tmp_path / "z"), "--model", "clipft-tiny", "--cache-dir", str(tmp_path / "cache"), "--device", "cpu"])
    columns = [pd.read_csv(tmp_path / d / "predictions.csv", nrows=1).columns.tolist() for d in ("p", "z")]
    assert columns[0] == columns[1] == ["id", "scored_on", "color", "color_prob", "color_top3", "color_status",
                                        "lid", "lid_prob", "lid_top3", "lid_status"]
    assert {"coverage", "auto_accuracy", "accuracy", "macro_f1"} <= set(
        json.loads((tmp_path / "p" / "metrics.json").read_text())["attributes"]["color"])


def test_a_labeller_is_built_not_changed(tmp_path, catalogue):
    labeller = Labeller.load(tiny_finetune(catalogue, tmp_path / "ft", tmp_path / "cache"))
    thresholds = {a: h.calibration.threshold for a, h in labeller.heads.items()}
    only_lid = labeller.select(["lid"])
    strict = labeller.with_target_precision(0.999)
    assert only_lid.attributes == ["lid"] and labeller.attributes == ["color", "lid"]
    assert {a: h.calibration.threshold for a, h in labeller.heads.items()} == thresholds
    assert strict.heads["color"].calibration.target_precision == 0.999
    assert labeller.heads["color"].calibration.target_precision == 0.95


def test_a_trained_run_labels_its_test_split_and_the_report_shows_it(tmp_path, catalogue):
    run_dir = tiny_finetune(catalogue, tmp_path / "ft", tmp_path / "cache")
    test = run_dir / "test"
    splits = pd.read_csv(run_dir / "splits.csv", dtype=str)
    predictions = pd.read_csv(test / "predictions.csv", dtype=str)
    assert sorted(predictions["id"]) == sorted(splits["id"][splits["split"] == "test"])
    assert json.loads((test / "metrics.json").read_text())["run"]["split"] == "test"
    assert (test / "confusion_color.png").is_file() and (test / "mistakes.csv").is_file()
    page = tmp_path / "report.html"
    run(["report", str(run_dir), "--out", str(page)])
    html = page.read_text(encoding="utf-8")
    assert "Test split, labelled by the run&#x27;s labeller" in html or "Test split, labelled by the run's labeller" in html
    assert "confusion_color.png" in html and "most confident mistakes" in html
