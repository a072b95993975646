import pandas as pd
import pytest

from clipft.commands.demo import run_demo


@pytest.mark.slow  # an alignment, a fine-tuning run and a predict pass: about 25 s on 2 cores
def test_demo_runs_end_to_end_on_a_tiny_model(tmp_path):
    table, review = run_demo(tmp_path / "demo", None, n=60, shots=2, seed=0, cache_dir=tmp_path / "cache",
                     progress=False, model="clipft-tiny")
    assert set(table["attribute"]) == {"color", "colours", "sleeve", "lid"}
    assert {"zero-shot before alignment", "aligned zero-shot", "fine-tuned (2 labels/class)", "majority class"} <= set(table["model"])
    assert table["accuracy"].between(0, 1).all()
    predictions = pd.read_csv(tmp_path / "demo" / "predict" / "predictions.csv", dtype=str, keep_default_na=False)
    assert len(predictions) == review.scored == (pd.read_csv(tmp_path / "demo" / "finetune" / "splits.csv")["split"] == "test").sum()
    queue = pd.read_csv(tmp_path / "demo" / "predict" / "review.csv")
    attributes = ("color", "colours", "sleeve", "lid")
    assert len(queue) == review.review == sum((predictions[f"{a}_status"] == "review").sum() for a in attributes)
    kinds = pd.read_csv(tmp_path / "demo" / "catalogue" / "catalogue.csv", dtype=str).set_index("id")["articleType"]
    kind = kinds[predictions["id"]].to_numpy()
    assert (predictions["lid"][kind == "Tshirts"] == "").all() and (predictions["sleeve"][kind != "Tshirts"] == "").all()
    for path in ("comparison.csv", "comparison.png", "align/best.pt", "finetune/best.pt", "finetune/curves.png", "report.html"):
        assert (tmp_path / "demo" / path).is_file(), path
    align_splits = pd.read_csv(tmp_path / "demo" / "align" / "splits.csv")
    tune_splits = pd.read_csv(tmp_path / "demo" / "finetune" / "splits.csv")
    pd.testing.assert_series_equal(align_splits["split"], tune_splits["split"])  # test items never trained on
    labels = pd.read_json(tmp_path / "demo" / "finetune" / "labels.json")
    assert (labels.fillna(0).max() <= 2).all()  # at most 2 labels per class
    report = (tmp_path / "demo" / "report.html").read_text(encoding="utf-8")
    assert all(f"<h2>{name} <small>" in report for name in ("align", "finetune", "predict"))
