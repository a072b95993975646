import json

import numpy as np
import pandas as pd
import pytest

from clipft.audit import label_issues
from clipft.commands.sample_data import make_catalogue
from conftest import REPO, run


def test_label_issues_finds_flipped_labels_in_separable_data():
    rng = np.random.default_rng(0)
    y = np.repeat(np.array(["a", "b", "c"], dtype=object), 40)
    X = np.eye(3)[np.repeat([0, 1, 2], 40)] * 3 + rng.normal(scale=0.5, size=(120, 3))
    flipped = rng.choice(120, size=8, replace=False)
    given = y.copy()
    given[flipped] = [{"a": "b", "b": "c", "c": "a"}[v] for v in y[flipped]]
    issues, summary = label_issues(np.arange(120).astype(str), given, X, folds=5)
    found = set(issues["id"].astype(int))
    assert found == set(flipped.tolist())
    assert (issues.set_index("id").loc[[str(i) for i in flipped], "suggested"].to_numpy() == y[flipped]).all()
    assert summary == {"audited": 120, "left_out_rare_classes": 0, "classes": 3, "issues": 8}
    assert issues["rank"].tolist() == list(range(1, 9))


@pytest.mark.slow
def test_audit_finds_injected_flips_on_a_generated_catalogue(tmp_path):
    data = make_catalogue(tmp_path / "cat", n=200, size=32, seed=5)
    frame = pd.read_csv(data, dtype=str)
    rng = np.random.default_rng(0)
    # Lids are a matter of shape, which ImageNet features see (colour, on this small set, they barely do).
    flipped = rng.choice(np.flatnonzero(frame["lid"].notna().to_numpy()), size=10, replace=False)
    frame.loc[flipped, "lid"] = frame.loc[flipped, "lid"].map({"With lid": "Without lid", "Without lid": "With lid"})
    noisy = data.parent / "noisy.csv"
    frame.to_csv(noisy, index=False)
    run(["probe", "--set", f"data={noisy}", "--set", f"prompts=[{REPO}/prompts/lid.yaml]", "--set", "model=lite0-minilm",
         "--set", f"cache_dir={tmp_path / 'cache'}", "--inputs", "image", "--out", str(tmp_path / "probe"), "--quiet"])
    out = tmp_path / "audit"
    run(["audit", "--run", str(tmp_path / "probe"), "--data", str(noisy), "--out", str(out),
         "--cache-dir", str(tmp_path / "cache")])
    issues = pd.read_csv(out / "label_issues.csv", dtype={"id": str})
    found = set(issues["id"])
    truth = set(frame["id"].iloc[flipped])
    precision, recall = len(found & truth) / max(len(found), 1), len(found & truth) / len(truth)
    assert precision >= 0.7 and recall >= 0.7, (precision, recall)
    assert (out / "suspects_lid.png").stat().st_size > 0
    assert json.loads((out / "summary.json").read_text())["attributes"]["lid"]["issues"] == len(issues)


def test_label_studio_corrections_come_back_into_the_catalogue(tmp_path):
    data = make_catalogue(tmp_path / "cat", n=6, size=16, seed=0)
    frame = pd.read_csv(data, dtype=str)
    export = [{"data": {"id": frame["id"][0]}, "annotations": [
        {"created_at": "2026-01-01", "result": [{"from_name": "baseColour", "type": "choices", "value": {"choices": ["Teal"]}}]},
        {"created_at": "2026-01-02", "result": [{"from_name": "baseColour", "type": "choices", "value": {"choices": ["Olive"]}}]}]},
        {"data": {"id": frame["id"][1]}, "annotations": [{"was_cancelled": True, "result": [
            {"from_name": "baseColour", "type": "choices", "value": {"choices": ["Teal"]}}]}]}]
    (tmp_path / "export.json").write_text(json.dumps(export))
    out = tmp_path / "corrected.csv"
    result = run(["import-labels", "--labelstudio", str(tmp_path / "export.json"), "--data", str(data), "--out", str(out)])
    assert "1 label(s) changed" in result.output
    corrected = pd.read_csv(out, dtype=str)
    assert corrected["baseColour"][0] == "Olive" and corrected["baseColour"][1] == frame["baseColour"][1]
    changes = pd.read_csv(f"{out}.changes.csv", dtype=str)
    assert changes.to_dict("records") == [{"id": frame["id"][0], "column": "baseColour",
                                           "before": frame["baseColour"][0], "after": "Olive"}]
    (tmp_path / "bad.json").write_text(json.dumps([{"data": {}, "annotations": []}]))
    bad = run(["import-labels", "--labelstudio", str(tmp_path / "bad.json"), "--data", str(data), "--out", str(out)],
              expect=1)
    assert "task 1 has no data.id or data.clipft_id" in bad.output
