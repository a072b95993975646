"""EM prior adaptation: a catalogue's own class frequencies, found without labels."""
import json

import numpy as np
import pandas as pd

from clipft.prior_shift import adapted_scores, em_prior, fit_strength, reweighted, split_prior
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


def _overconfident_scores(n, prior, seed):
    """Scores of a classifier that learnt on balanced classes (its log prior: uniform) and is
    twice as sure as it should be, on products drawn with class frequencies ``prior``."""
    rng = np.random.default_rng(seed)
    means = np.array([[0.0, 0.0], [1.5, 0.0], [0.0, 1.5]])
    y = rng.choice(3, size=n, p=prior)
    x = means[y] + rng.normal(size=(n, 2))
    return -((x[:, None, :] - means[None]) ** 2).sum(axis=2), y  # twice the exact log-likelihood


def test_a_few_shot_classifier_takes_the_catalogue_s_prior_at_the_strength_validation_chooses():
    prior, uniform = np.array([0.8, 0.15, 0.05]), np.zeros(3)
    val, y_val = _overconfident_scores(3000, prior, seed=1)
    test, y_test = _overconfident_scores(3000, prior, seed=2)
    strength = fit_strength(val, y_val, uniform)
    assert strength is not None and strength < 1  # the over-sure evidence is damped
    adapted = adapted_scores(test, uniform, strength)
    assert (adapted.argmax(axis=1) == y_test).mean() > (test.argmax(axis=1) == y_test).mean() + 0.05
    np.testing.assert_allclose(np.exp(adapted).sum(axis=1), 1, atol=1e-9)  # log posteriors
    # on balanced products EM finds about the uniform prior: what validation chooses changes little
    balanced, y_balanced = _overconfident_scores(3000, np.full(3, 1 / 3), seed=3)
    chosen = fit_strength(balanced, y_balanced, uniform)
    same = balanced if chosen is None else adapted_scores(balanced, uniform, chosen)
    assert abs((same.argmax(axis=1) == y_balanced).mean() - (balanced.argmax(axis=1) == y_balanced).mean()) < 0.01


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
