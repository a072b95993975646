import pandas as pd
import pytest
from click.testing import CliRunner

from clipft.cli import cli
from clipft.commands.curve import BEST, METHODS, parse_sizes
from clipft.reporting.tables import labels_needed
from clipft.commands.sample_data import make_catalogue
from conftest import REPO


def test_parse_sizes():
    assert parse_sizes("1, 4,all") == [1, 4, None]
    with pytest.raises(ValueError, match="'0'"):
        parse_sizes("0,2")


@pytest.mark.slow
def test_curve_smoke_on_a_tiny_model(tmp_path):
    data = make_catalogue(tmp_path / "cat", n=60, size=32, seed=7)
    args = ["curve", "--set", f"data={data}", "--set", f"prompts=[{REPO}/prompts/lid.yaml, {REPO}/prompts/color.yaml]",
            "--set", "model=clipft-tiny", "--set", "epochs=2", "--set", "batch_size=8", "--set", "min_epoch_steps=2",
            "--set", f"cache_dir={tmp_path / 'cache'}", "--sizes", "1,all", "--seeds", "0", "--out", str(tmp_path / "c"),
            "--quiet"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    curve = pd.read_csv(tmp_path / "c" / "curve.csv", dtype={"size": str})
    # per attribute: 5 methods and the best of them x 2 sizes x 1 seed, plus three lines that use no labels
    assert len(curve) == 2 * (6 * 2 + 3)
    assert curve.groupby("attribute").size().tolist() == [15, 15]
    assert set(curve["method"]) == {*METHODS, BEST, "zero-shot", "catalogue prior (EM)", "majority class"}
    assert set(curve["size"]) == {"0", "1", "all"}
    # the best row of each point: the highest validation accuracy of the methods trained there and
    # of the lines that use no labels, with that one's test scores
    for (attribute, size), point in curve[curve["n_train"] > 0].groupby(["attribute", "size"]):
        best = point[point["method"] == BEST].iloc[0]
        no_labels = curve[(curve["attribute"] == attribute) & (curve["size"] == "0") & curve["val_accuracy"].notna()]
        others = pd.concat([point[point["method"] != BEST], no_labels])
        assert best["val_accuracy"] == others["val_accuracy"].max()
        assert best["accuracy"] == others[others["method"] == best["chosen"]]["accuracy"].iloc[0]
    assert (curve[curve["size"] == "0"]["n_train"] == 0).all()
    one_shot = curve[(curve["size"] == "1") & (curve["attribute"] == "lid")]
    assert (one_shot["n_train"] == 2).all()  # one label for each of the two lid classes
    assert (curve[curve["size"] == "all"]["n_train"] > one_shot["n_train"].max()).all()
    assert (curve[curve["size"] != "0"]["train_seconds"] > 0).all()
    for name in ("curve_lid.png", "curve_color.png", "labels_needed.csv", "labels_needed.md"):
        assert (tmp_path / "c" / name).stat().st_size > 0, name
    needed = pd.read_csv(tmp_path / "c" / "labels_needed.csv", dtype=str)
    assert set(needed["shots_100%"]) <= {"1", "all"} and len(needed) == 2 * 6

    # a rerun finds every point done and trains nothing
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0, again.output
    pd.testing.assert_frame_equal(curve, pd.read_csv(tmp_path / "c" / "curve.csv", dtype={"size": str}))

    # a curve.csv of an older release (no validation accuracy) has its points scored again
    curve.drop(columns=["val_accuracy", "prior_strength", "chosen"]).to_csv(tmp_path / "c" / "curve.csv", index=False)
    assert CliRunner().invoke(cli, args).exit_code == 0
    rescored = pd.read_csv(tmp_path / "c" / "curve.csv", dtype={"size": str})
    assert len(rescored) == len(curve)
    assert rescored[rescored["method"] != "majority class"]["val_accuracy"].notna().all()

    # the report shows the labels-needed table and the learning curves
    from clipft.reporting.html_report import open_run, write_report

    assert open_run(tmp_path / "c").kind == "curve"
    page = write_report([tmp_path / "c"], tmp_path / "report.html").read_text(encoding="utf-8")
    assert "curve_lid.png" in page and "curve_color.png" in page and "shots_90%" in page


def test_labels_needed_picks_the_first_size_that_reaches_the_share():
    rows = [("a", "m", size, seed, n, acc) for seed in (0, 1) for size, n, acc in
            (("1", 2, 0.50), ("2", 4, 0.85), ("4", 8, 0.95), ("all", 20, 0.94))]
    curve = pd.DataFrame(rows, columns=["attribute", "method", "size", "seed", "n_train", "accuracy"])
    needed = labels_needed(curve).iloc[0]
    assert needed["shots_90%"] == "2" and needed["n_train_90%"] == 4  # 0.85 >= 0.9 * 0.94
    assert needed["shots_100%"] == "4"  # beats the full-data accuracy


def test_curve_refuses_bad_sizes_and_seeds(tmp_path):
    base = ["curve", "--set", "data=x.csv", "--set", "prompts=[x.yaml]", "--out", str(tmp_path)]
    for option, value, message in (("--sizes", "1,0", "--sizes"), ("--seeds", "1,a", "'a' is not an integer")):
        result = CliRunner().invoke(cli, [*base, option, value])
        assert result.exit_code == 2 and message in result.output
