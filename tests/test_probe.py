import numpy as np
import pandas as pd
import pytest

from clipft.training.config import CatalogueCfg, FinetuneCfg, RuntimeCfg, TowersCfg, load_config
from clipft.commands.probe import run_probe
from clipft.probe import CLASSIFIERS, fit_probe
from clipft.commands.sample_data import make_catalogue
from conftest import REPO


@pytest.mark.parametrize("kind", list(CLASSIFIERS))
def test_fit_probe_separates_blobs_and_picks_its_parameter_on_validation(kind):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)) * 4
    y = np.repeat(["a", "b", "c"], 30)
    X = centres[np.repeat([0, 1, 2], 30)] + rng.normal(size=(90, 16))
    clf, value, val_accuracy = fit_probe(kind, X[::2], y[::2], X[1::2], y[1::2])
    assert value in CLASSIFIERS[kind][1]
    assert val_accuracy == 1.0 and (clf.predict(X[1::2]) == y[1::2]).all()


def test_probe_on_a_tiny_generated_catalogue(tmp_path):
    data = make_catalogue(tmp_path / "cat", n=48, size=32, seed=2)
    prompts = [REPO / "prompts" / "lid.yaml", REPO / "prompts" / "color.yaml"]
    cfg = FinetuneCfg(catalogue=CatalogueCfg(data=data, prompts=prompts),
                      towers=TowersCfg(model="clipft-tiny", lock_text=False), runtime=RuntimeCfg(cache_dir=tmp_path / "cache"))
    table = run_probe(cfg, tmp_path / "probe", ("logistic", "svm"), ("image", "text", "fusion"), progress=False)
    saved = load_config(tmp_path / "probe" / "config.yaml")  # the run's resolved config loads back
    assert saved.towers.lock_text and saved.task.inputs == "fusion" and saved.catalogue == cfg.catalogue
    assert cfg.towers.lock_text is False  # the caller's config is left as it was
    assert table.equals(pd.read_csv(tmp_path / "probe" / "probe.csv"))
    assert len(table) == 2 * 2 * 3 * 2  # attributes x classifiers x inputs x titles present/removed
    assert table["accuracy"].between(0, 1).all() and table["macro_f1"].between(0, 1).all()
    splits = pd.read_csv(tmp_path / "probe" / "splits.csv", dtype={"id": str})
    assert set(splits["split"]) == {"train", "val", "test"}
    # Without titles, a text-only probe sees the same (zero) vector for every product: one answer for all.
    frame = pd.read_csv(data, dtype=str).merge(splits, on="id")
    test = frame[frame["split"] == "test"]
    for row in table[(table["inputs"] == "text") & (table["titles"] == "removed")].itertuples():
        column = {"lid": "lid", "color": "baseColour"}[row.attribute]
        shares = test[column].dropna().value_counts(normalize=True)
        assert np.isclose(shares.to_numpy(), row.accuracy).any(), (row, shares)
    image = table[table["inputs"] == "image"].pivot_table(index=["attribute", "classifier"], columns="titles",
                                                            values="accuracy")
    assert (image["present"] == image["removed"]).all()  # titles do not touch the image probe
