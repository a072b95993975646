import json
import logging

import pandas as pd
import pytest
from click.testing import CliRunner

from clipft.cli import cli
from clipft.commands.sample_data import make_catalogue
from conftest import REPO, run

PROMPTS = [str(REPO / "prompts" / f"{name}.yaml") for name in ("color", "sleeve", "lid")]


def zeroshot_args(csv, out, cache, *extra):
    prompts = [arg for p in PROMPTS for arg in ("--prompts", p)]
    return ["zeroshot", *prompts, "--data", str(csv), "--out", str(out), "--model", "clipft-tiny",
            "--workers", "0", "--cache-dir", str(cache), "--device", "cpu", *extra]


@pytest.fixture
def catalogue(tmp_path):
    return make_catalogue(tmp_path / "cat", n=9, size=32, seed=2)


def test_zeroshot_end_to_end_then_from_the_cache(tmp_path, catalogue):
    result = run(zeroshot_args(catalogue, tmp_path / "out", tmp_path / "cache"))
    assert "9 images encoded" in result.output
    assert "accuracy" in result.output and "sleeve" in result.output
    predictions = pd.read_csv(tmp_path / "out" / "predictions.csv", dtype=str)
    assert len(predictions) == 9
    assert list(predictions.columns[:5]) == ["id", "scored_on", "color", "color_prob", "color_top3"]
    assert (predictions["scored_on"] == "image+title").all()  # the catalogue has titles: fused by default
    truth = pd.read_csv(catalogue, dtype=str)
    cookware = truth["articleType"].isin(["Mugs", "Pans"]).to_numpy()
    # lid applies to mugs and pans alone (lid.yaml's applies_to): two classes, top-3 holds both
    assert predictions["lid_top3"][cookware].str.count(":").eq(2).all()
    statuses = pd.read_csv(tmp_path / "out" / "predictions.csv", dtype=str, keep_default_na=False)["lid_status"]
    assert (statuses[~cookware] == "n/a").all() and predictions["lid"][~cookware].isna().all()
    assert predictions["color_top3"].str.count(":").eq(3).all()
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["attributes"]["color"]["n"] == 9
    assert metrics["attributes"]["sleeve"]["n"] == truth["sleeve"].notna().sum()
    assert metrics["attributes"]["sleeve"]["not_applicable"] == truth["sleeve"].isna().sum()
    assert metrics["attributes"]["sleeve"]["missing_labels"] == 0
    accuracy = (predictions["color"] == truth["baseColour"]).mean()
    assert metrics["attributes"]["color"]["accuracy"] == pytest.approx(accuracy)
    for name in ("color", "sleeve", "lid"):
        assert (tmp_path / "out" / f"confusion_{name}.png").stat().st_size > 1000
    again = run(zeroshot_args(catalogue, tmp_path / "out2", tmp_path / "cache"))
    assert "0 images encoded" in again.output
    pd.testing.assert_frame_equal(predictions, pd.read_csv(tmp_path / "out2" / "predictions.csv", dtype=str))


def test_chunked_scoring_equals_scoring_at_once(tmp_path, catalogue):
    frame = pd.read_csv(catalogue, dtype=str)
    (catalogue.parent / frame.loc[6, "image"]).unlink()  # a missing photo in the second chunk
    whole = run(zeroshot_args(catalogue, tmp_path / "whole", tmp_path / "cache", "--skip-bad"))
    chunked = run(zeroshot_args(catalogue, tmp_path / "chunked", tmp_path / "cache", "--skip-bad", "--chunk-size", "4"))
    assert "scored 8 of 9 products" in whole.output and "scored 8 of 9 products" in chunked.output
    for name in ("predictions.csv", "skipped.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "whole" / name, dtype=str),
                                      pd.read_csv(tmp_path / "chunked" / name, dtype=str))
    skipped = pd.read_csv(tmp_path / "chunked" / "skipped.csv", dtype=str)
    assert skipped[["id", "line"]].values.tolist() == [[frame.loc[6, "id"], "8"]]
    metrics = [json.loads((tmp_path / d / "metrics.json").read_text())["attributes"] for d in ("whole", "chunked")]
    assert metrics[0] == metrics[1]
    stopped = run(zeroshot_args(catalogue, tmp_path / "stop", tmp_path / "cache", "--chunk-size", "4"), expect=1)
    assert "line 8:" in stopped.output and "Encoding" not in stopped.output  # found before any work


def test_image_only_and_text_only(tmp_path, catalogue):
    image = run(zeroshot_args(catalogue, tmp_path / "image", tmp_path / "cache", "--image-only"))
    assert "on their photos" in image.output
    text = run(zeroshot_args(catalogue, tmp_path / "text", tmp_path / "cache", "--text-only"))
    assert "on their titles (0 images encoded" in text.output
    for name, expected in (("image", "image"), ("text", "title")):
        predictions = pd.read_csv(tmp_path / name / "predictions.csv")
        assert (predictions["scored_on"] == expected).all()
        run_info = json.loads((tmp_path / name / "metrics.json").read_text())["run"]
        assert run_info["inputs"] == name and run_info["title_weight"] is None
    bare = catalogue.parent / "untitled.csv"
    pd.read_csv(catalogue).drop(columns="title").to_csv(bare, index=False)
    refused = run(zeroshot_args(bare, tmp_path / "x", tmp_path / "cache", "--text-only"), expect=1)
    assert "untitled.csv" in refused.output and "--title-column" in refused.output


def test_without_labels_only_predictions_and_the_run_are_written(tmp_path, catalogue):
    pd.read_csv(catalogue)[["id", "image", "articleType"]].to_csv(catalogue.parent / "bare.csv", index=False)
    result = run(zeroshot_args(catalogue.parent / "bare.csv", tmp_path / "out", tmp_path / "cache"))
    # beside the run's lock file, which stays (an advisory flock; see docs/bad-input.md)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".clipft.lock", "metrics.json", "predictions.csv"]
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["attributes"] == {}
    assert "accuracy" not in result.output


def test_bad_images_stop_the_run_unless_skipped(tmp_path, catalogue):
    frame = pd.read_csv(catalogue, dtype=str)
    (catalogue.parent / frame.loc[2, "image"]).unlink()
    (catalogue.parent / frame.loc[5, "image"]).write_bytes(b"\xff\xd8 truncated jpeg")

    missing = run(zeroshot_args(catalogue, tmp_path / "out", tmp_path / "cache"), expect=1)
    assert "line 4:" in missing.output and "file not found" in missing.output and "--skip-bad" in missing.output
    assert "Encoding" not in missing.output  # stopped before any work

    (catalogue.parent / frame.loc[2, "image"]).write_bytes((catalogue.parent / frame.loc[0, "image"]).read_bytes())
    corrupt = run(zeroshot_args(catalogue, tmp_path / "out", tmp_path / "cache"), expect=1)
    assert "line 7:" in corrupt.output and "cannot decode image" in corrupt.output
    (catalogue.parent / frame.loc[2, "image"]).unlink()

    result = run(zeroshot_args(catalogue, tmp_path / "out", tmp_path / "cache", "--skip-bad"))
    assert "skipped 2" in result.output
    assert "0 images encoded" in result.output  # the stopped run had already cached the good photos
    skipped = pd.read_csv(tmp_path / "out" / "skipped.csv", dtype=str)
    assert skipped["id"].tolist() == [frame.loc[2, "id"], frame.loc[5, "id"]]
    assert skipped["reason"].str.contains("file not found").iloc[0]
    predictions = pd.read_csv(tmp_path / "out" / "predictions.csv", dtype=str)
    assert len(predictions) == 7 and frame.loc[5, "id"] not in set(predictions["id"])
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["attributes"]["color"]["skipped_images"] == 2 and metrics["attributes"]["color"]["n"] == 7


def test_unknown_labels_are_reported_and_left_out(tmp_path, catalogue, caplog):
    frame = pd.read_csv(catalogue, dtype=str)
    frame.loc[0, "baseColour"] = "Teal"
    frame.to_csv(catalogue, index=False)
    with caplog.at_level(logging.WARNING, logger="clipft"):
        run(zeroshot_args(catalogue, tmp_path / "out", tmp_path / "cache"))
    assert any("1 label(s) are not classes" in r.getMessage() and "'Teal'" in r.getMessage() for r in caplog.records)
    color = json.loads((tmp_path / "out" / "metrics.json").read_text())["attributes"]["color"]
    assert color["n"] == 8 and color["unknown_values"] == {"Teal": 1}


def test_malformed_prompt_file_is_named(tmp_path, catalogue):
    bad = tmp_path / "bad.yaml"
    bad.write_text("attribute: x\ncolumn: y\ntemplates: ['no placeholder']\nclasses: [a, b]\n")
    result = CliRunner().invoke(cli, ["zeroshot", "--prompts", str(bad), "--data", str(catalogue), "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert "bad.yaml: key 'templates[0]'" in result.output


def test_limit_and_seed_make_a_reproducible_sample(tmp_path, catalogue):
    run(zeroshot_args(catalogue, tmp_path / "a", tmp_path / "cache", "--limit", "4", "--seed", "1"))
    run(zeroshot_args(catalogue, tmp_path / "b", tmp_path / "cache", "--limit", "4", "--seed", "1"))
    a = pd.read_csv(tmp_path / "a" / "predictions.csv")
    assert len(a) == 4
    pd.testing.assert_frame_equal(a, pd.read_csv(tmp_path / "b" / "predictions.csv"))


def test_help_explains_the_offline_model():
    text = " ".join(run(["zeroshot", "--help"]).output.split())
    assert "lite0-minilm" in text and "near chance" in text


def test_sample_data_command(tmp_path):
    result = run(["sample-data", "--out", str(tmp_path / "s"), "-n", "4", "--size", "24"])
    assert "wrote 4 products" in result.output
    assert len(pd.read_csv(tmp_path / "s" / "catalogue.csv")) == 4
