"""clipft report: one self-contained HTML page from run folders."""
import base64
import re

import pandas as pd
import pytest

from clipft.commands.sample_data import make_catalogue
from clipft.reporting.html_report import open_run, side_by_side
from conftest import run, tiny_finetune


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    data = make_catalogue(tmp / "cat", n=48, size=32, seed=2)
    cache = str(tmp / "cache")
    tiny_finetune(data, tmp / "ft", tmp / "cache")
    run(["predict", "--run", str(tmp / "ft"), "--data", str(data), "--out", str(tmp / "predict"), "--cache-dir", cache])
    run(["zeroshot", "--prompts", "color", "--data", str(data), "--model", "clipft-tiny", "--out", str(tmp / "zs"),
         "--cache-dir", cache])
    return tmp


def test_scoring_runs_keep_their_most_confident_mistakes(runs):
    mistakes = pd.read_csv(runs / "predict" / "mistakes.csv", dtype=str)
    predictions = pd.read_csv(runs / "predict" / "predictions.csv", dtype=str).set_index("id")
    catalogue = pd.read_csv(runs / "cat" / "catalogue.csv", dtype=str).set_index("id")
    colour = mistakes[mistakes["attribute"] == "color"]
    assert len(colour) and (colour["label"] != colour["predicted"]).all()
    assert (colour["label"] == catalogue.loc[colour["id"], "baseColour"].to_numpy()).all()
    assert (colour["predicted"] == predictions.loc[colour["id"], "color"].to_numpy()).all()
    probs = colour["probability"].astype(float).to_numpy()
    assert (probs[:-1] >= probs[1:]).all()  # surest first
    wrong = predictions["color"] != catalogue.loc[predictions.index, "baseColour"]
    assert len(colour) == min(48, int(wrong.sum()))


def test_the_report_inlines_everything_and_puts_runs_side_by_side(runs):
    out = runs / "report.html"
    run(["report", str(runs / "ft"), str(runs / "predict"), str(runs / "zs"), "--out", str(out)])
    page = out.read_text(encoding="utf-8")
    assert [open_run(runs / n).kind for n in ("ft", "predict", "zs")] == ["finetune", "predict", "zeroshot"]
    table = side_by_side([open_run(runs / n) for n in ("ft", "predict", "zs")])
    assert set(table.columns.get_level_values(0)) == {"ft", "predict", "zs"}
    comparison = pd.read_csv(runs / "ft" / "comparison.csv")
    tuned = comparison[(comparison["model"] == "fine-tuned") & (comparison["attribute"] == "color")]["accuracy"].iloc[0]
    assert table.loc["color", ("ft", "fine-tuned")] == pytest.approx(tuned)
    sources = re.findall(r'src="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/") for s in sources)
    assert not re.search(r'(href|src)="https?:', page)
    for name in ("curves.png", "risk_coverage.png", "confusion_color.png"):
        assert name in page
    assert "color: most confident mistakes" in page
    base64.b64decode(sources[0].split(",", 1)[1], validate=True)


def test_a_folder_that_is_not_a_run_is_refused(tmp_path):
    result = run(["report", str(tmp_path), "--out", str(tmp_path / "r.html")], expect=1)
    assert "not a clipft run folder" in result.output


def test_top_k_text_is_the_three_likeliest_classes_with_three_decimals():
    import numpy as np

    from clipft.reporting.results import top_k

    proba = np.random.default_rng(0).dirichlet(np.ones(5), size=200)
    classes = ["a", "b", "c", "d", "e"]
    expected = [";".join(f"{classes[j]}:{row[j]:.3f}" for j in np.argsort(-row)[:3]) for row in proba]
    assert top_k(proba, classes) == expected
    assert top_k(np.array([[0.0, 1.0]]), ["x", "y"]) == ["y:1.000;x:0.000"]


def test_probe_runs_report_each_classifier_and_input(tmp_path, sample_catalogue):
    from clipft.reporting.html_report import headline, open_run

    run(["probe", "--set", f"data={sample_catalogue}", "--set", "prompts=[color]", "--set", "model=clipft-tiny",
         "--set", f"cache_dir={tmp_path / 'cache'}", "--out", str(tmp_path / "probe"), "--quiet"])
    probe = open_run(tmp_path / "probe")
    table = headline(probe)
    expected = pd.read_csv(tmp_path / "probe" / "probe.csv").query("titles == 'present'")
    assert probe.kind == "probe" and list(table.columns) == ["logistic (image)"]
    assert table.loc["color", "logistic (image)"] == pytest.approx(expected["accuracy"].iloc[0])
