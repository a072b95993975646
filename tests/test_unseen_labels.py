"""Label values a run never saw (not classes of its prompt file) are counted and named in
metrics.json, by predict as by zeroshot, and predict warns of them."""
import json
import logging

import pandas as pd
import pytest

from conftest import REPO, run, tiny_run


@pytest.fixture(scope="module")
def relabelled(tmp_path_factory):
    """A tiny run, and its catalogue with two colours it never saw and one blank colour."""
    data, run_dir, cache = tiny_run(tmp_path_factory.mktemp("unseen"), n=40, seed=5)
    frame = pd.read_csv(data, dtype=str)
    frame.loc[[0, 3], "baseColour"] = "Teal"
    frame.loc[5, "baseColour"] = "Ochre"
    frame.loc[7, "baseColour"] = None
    frame.to_csv(data.parent / "relabelled.csv", index=False)
    return run_dir, data.parent / "relabelled.csv", cache


def test_predict_counts_and_names_label_values_the_run_never_saw(tmp_path, relabelled, caplog):
    run_dir, data, cache = relabelled
    with caplog.at_level(logging.WARNING, logger="clipft"):
        run(["predict", "--run", str(run_dir), "--data", str(data), "--out", str(tmp_path / "p"), "--cache-dir", str(cache)])
    color = json.loads((tmp_path / "p" / "metrics.json").read_text())["attributes"]["color"]
    assert color["unknown_values"] == {"Teal": 2, "Ochre": 1} and color["unknown_labels"] == 3
    assert color["missing_labels"] == 1 and color["n"] == 40 - 4
    warnings = [r.getMessage() for r in caplog.records if r.name == "clipft.reporting.results"]
    assert warnings == [f"color: 3 label(s) are not classes of {run_dir / 'labeller.json'}: color, left out of the "
                        f"metrics: 'Teal' x2, 'Ochre' x1"]


def test_predict_and_zeroshot_account_for_left_out_labels_alike(tmp_path, relabelled):
    run_dir, data, cache = relabelled
    run(["predict", "--run", str(run_dir), "--data", str(data), "--out", str(tmp_path / "p"), "--cache-dir", str(cache)])
    run(["zeroshot", "--prompts", str(REPO / "prompts" / "color.yaml"), "--data", str(data), "--out",
         str(tmp_path / "z"), "--model", "clipft-tiny", "--cache-dir", str(cache), "--device", "cpu"])
    keys = ("missing_labels", "unknown_labels", "unknown_values")
    predicted, zeroshot = ({k: json.loads((tmp_path / d / "metrics.json").read_text())["attributes"]["color"][k]
                            for k in keys} for d in ("p", "z"))
    assert predicted == zeroshot == {"missing_labels": 1, "unknown_labels": 3, "unknown_values": {"Teal": 2, "Ochre": 1}}
