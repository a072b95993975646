"""clipft suggest: the unlabelled products to label next, as pre-annotated Label Studio tasks."""
import json

import numpy as np
import pandas as pd
import pytest
from conftest import run, tiny_run


@pytest.fixture(scope="module")
def suggest_setup(tmp_path_factory):
    """A tiny colour + lid run, and a 30-product catalogue of which the first 10 keep their labels."""
    data, run_dir, cache = tiny_run(tmp_path_factory.mktemp("suggest"), n=30, seed=2)
    frame = pd.read_csv(data, dtype=str)
    frame.loc[10:, ["baseColour", "lid"]] = None
    unlabelled = data.parent / "unlabelled.csv"
    frame.to_csv(unlabelled, index=False)
    return run_dir, unlabelled, cache


def suggest(setup, out, *extra):
    run_dir, data, cache = setup
    return run(["suggest", "--run", str(run_dir), "--data", str(data), "--cache-dir", str(cache), "--out", str(out),
                *extra])


@pytest.mark.parametrize("strategy", ["typiclust", "margin", "badge"])
def test_suggests_budget_distinct_unlabelled_products(suggest_setup, tmp_path, strategy):
    result = suggest(suggest_setup, tmp_path / "s", "--budget", "7", "--strategy", strategy, "--seed", "3")
    assert "suggested 7 of 20 unlabelled products (10 labelled already)" in result.output
    chosen = pd.read_csv(tmp_path / "s" / "suggestions.csv", dtype=str)
    assert len(chosen) == chosen["id"].nunique() == 7
    assert chosen["rank"].tolist() == [str(i) for i in range(1, 8)]
    labelled = set(pd.read_csv(suggest_setup[1], dtype=str)["id"][:10])
    assert not labelled & set(chosen["id"])
    tasks = json.loads((tmp_path / "s" / "suggest_labelstudio.json").read_text())
    assert [t["data"]["id"] for t in tasks] == chosen["id"].tolist()
    for task in tasks:
        names = {r["from_name"] for r in task["predictions"][0]["result"]}
        assert "baseColour" in names and names <= {"baseColour", "lid"}
    config = (tmp_path / "s" / "labelstudio_config.xml").read_text()
    assert 'name="baseColour"' in config and 'name="lid"' in config


def test_deterministic_per_seed(suggest_setup, tmp_path):
    picks = []
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        suggest(suggest_setup, tmp_path / name, "--budget", "5", "--strategy", "weighted", "--seed", seed)
        picks.append(pd.read_csv(tmp_path / name / "suggestions.csv", dtype=str)["id"].tolist())
    assert picks[0] == picks[1]
    assert picks[0] != picks[2]  # another seed, another draw (weighted k-means++ samples)


def test_margin_picks_the_least_sure_products(suggest_setup, tmp_path):
    """The margin strategy's picks are the products with the largest uncertainty in suggestions' own numbers."""
    from clipft.catalogue import CatalogueSource
    from clipft.commands.suggest import choose
    from clipft.labeller import Labeller
    from clipft.scoring import EncodeOptions, score_chunk

    run_dir, data, cache = suggest_setup
    labeller = Labeller.load(run_dir, "cpu", str(cache))
    options = EncodeOptions(cache_dir=str(cache))
    scored = score_chunk(labeller, CatalogueSource(str(data)).load(), options, progress=False)
    found = choose(labeller, scored, 4, "margin", 0)
    margins = []
    for row in range(10, 30):
        per = []
        for name, proba in scored.proba.items():
            if scored.applies[name][row]:
                top = np.sort(proba[row])[::-1]
                per.append(1 - (top[0] - top[1]))
        margins.append(np.mean(per))
    expected = 10 + np.argsort(margins)[::-1][:4]
    assert sorted(found.picks.tolist()) == sorted(expected.tolist())


def test_needs_a_run_or_prompts(suggest_setup, tmp_path):
    _, data, _ = suggest_setup
    result = run(["suggest", "--data", str(data), "--budget", "3", "--out", str(tmp_path / "s")], expect=2)
    assert "--run or --prompts" in result.output


def test_zero_shot_prompts_instead_of_a_run(suggest_setup, tmp_path):
    _, data, cache = suggest_setup
    result = run(["suggest", "--prompts", "color", "--model", "clipft-tiny", "--data", str(data), "--budget", "3",
                  "--strategy", "coreset", "--cache-dir", str(cache), "--out", str(tmp_path / "z")])
    assert "suggested 3 of 20" in result.output
    assert json.loads((tmp_path / "z" / "suggest.json").read_text())["model_version"] == "clipft-tiny"


def test_suggested_tasks_name_photos_under_the_document_root(suggest_setup, tmp_path):
    root = suggest_setup[1].parent.parent  # the folder that holds the catalogue's folder
    suggest(suggest_setup, tmp_path / "s", "--budget", "3", "--document-root", str(root))
    tasks = json.loads((tmp_path / "s" / "suggest_labelstudio.json").read_text())
    folder = suggest_setup[1].parent.name
    assert all(t["data"]["image"].startswith(f"/data/local-files/?d={folder}/images/") for t in tasks)
