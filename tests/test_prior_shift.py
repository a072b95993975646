"""EM prior adaptation: a catalogue's own class frequencies, found without labels."""
import json

import numpy as np
import pandas as pd

from clipft.prior_shift import em_prior, reweighted, split_prior
from conftest import run, tiny_run


def test_em_recovers_a_shifted_class_prior_from_posteriors_alone():
    rng = np.random.default_rng(0)
    means = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]])
    target = np.array([0.7, 0.2, 0.1])  # the new catalogue; the model's split had uniform classes
    y = rng.choice(3, size=6000, p=target)
    x = means[y] + rng.normal(size=(6000, 2))
    likelihood = np.exp(-0.5 * ((x[:, None, :] - means[None]) ** 2).sum(axis=2))
    source = np.full(3, 1 / 3)
    proba = likelihood / likelihood.sum(axis=1, keepdims=True)  # exact posteriors under the uniform prior
    estimate = em_prior(proba, source)
    np.testing.assert_allclose(estimate, target, atol=0.03)
    naive = proba.mean(axis=0)  # averaging posteriors alone stays biased towards the source prior
    assert np.abs(naive - target).max() > np.abs(estimate - target).max()
    accuracy = (reweighted(proba, source, estimate).argmax(axis=1) == y).mean()
    assert accuracy > (proba.argmax(axis=1) == y).mean()
    np.testing.assert_allclose(split_prior(np.array([0, 0, 1]), 3), [3 / 6, 2 / 6, 1 / 6])


def test_predict_adapts_to_the_catalogue_s_frequencies(tmp_path):
    data, run_dir, cache = tiny_run(tmp_path, n=36, seed=4)
    frame = pd.read_csv(data, dtype=str)
    mugs = frame[frame["articleType"] != "Tshirts"]  # a catalogue of mugs and pans only
    mugs.to_csv(data.parent / "mugs.csv", index=False)
    args = ["predict", "--run", str(run_dir), "--data", str(data.parent / "mugs.csv"), "--cache-dir", str(cache)]
    run(args + ["--out", str(tmp_path / "plain")])
    run(args + ["--out", str(tmp_path / "adapted"), "--adapt-prior"])
    priors = json.loads((tmp_path / "adapted" / "metrics.json").read_text())["run"]["priors"]
    assert set(priors) == {"color", "lid"} and abs(sum(priors["lid"].values()) - 1) < 1e-3
    plain, adapted = (pd.read_csv(tmp_path / d / "predictions.csv") for d in ("plain", "adapted"))
    assert not np.allclose(plain["color_prob"], adapted["color_prob"])
