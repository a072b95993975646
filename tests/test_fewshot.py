"""GDA and Tip-Adapter on embeddings, blended with the zero-shot scores (clipft/fewshot.py)."""
import numpy as np
import pytest

from clipft.fewshot import GDA, TipAdapter, fit_blend


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _classes(n, seed, spread=0.2, d=16, k=3):
    """Unit embeddings of k classes around fixed directions, and their class indices."""
    centres = _unit(np.random.default_rng(123).normal(size=(k, d)))
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, size=n)
    return _unit(centres[y] + spread * rng.normal(size=(n, d))), y


def test_gda_learns_the_classes_from_a_few_examples_each():
    X, y = _classes(5 * 3, seed=0)
    X_test, y_test = _classes(600, seed=1)
    for shrinkage in (0.2, 1.0):
        scores = GDA(shrinkage).fit(X, y, 3).decision_function(X_test)
        assert scores.shape == (600, 3) and (scores.argmax(axis=1) == y_test).mean() > 0.9


def test_a_class_without_examples_leaves_the_decision_to_the_others():
    X, y = _classes(60, seed=2)
    keep = y != 2
    for adapter in (GDA(0.5), TipAdapter(5.5)):
        scores = adapter.fit(X[keep], y[keep], 3).decision_function(X)
        assert np.isfinite(scores).all()
        np.testing.assert_allclose(scores[:, 2], scores[:, :2].mean(axis=1))


def test_tip_adapter_votes_for_the_label_of_the_nearest_keys():
    X, y = _classes(30, seed=3)
    scores = TipAdapter(10.0).fit(X, y, 3).decision_function(X)
    assert (scores.argmax(axis=1) == y).mean() > 0.9


def _fair_zero_shot(y, seed):
    return np.eye(3)[y] * 2 + np.random.default_rng(seed).normal(size=(len(y), 3))


def test_the_blend_keeps_zero_shot_when_the_labels_teach_nothing_and_uses_them_when_they_do():
    X_val, y_val = _classes(400, seed=4)
    X_test, y_test = _classes(400, seed=8)
    zero_shot_val, zero_shot_test = _fair_zero_shot(y_val, 5), _fair_zero_shot(y_test, 9)
    zero_shot_accuracy = (zero_shot_test.argmax(axis=1) == y_test).mean()
    X, y = _classes(24, seed=6)
    for kind in ("gda", "tip"):
        # labels that teach nothing: validation keeps the blend near zero-shot on new products too
        shuffled = fit_blend(kind, X, np.random.default_rng(7).permutation(y), 3, X_val, zero_shot_val, y_val)
        accuracy = (shuffled.decision_function(X_test, zero_shot_test).argmax(axis=1) == y_test).mean()
        assert accuracy >= zero_shot_accuracy - 0.03
        taught = fit_blend(kind, X, y, 3, X_val, zero_shot_val, y_val)
        assert taught.weight > 0
        accuracy = (taught.decision_function(X_test, zero_shot_test).argmax(axis=1) == y_test).mean()
        assert accuracy > zero_shot_accuracy + 0.05
    with pytest.raises(ValueError, match="adapter must be one of gda, tip"):
        fit_blend("knn", X, y, 3, X_val, zero_shot_val, y_val)


def test_one_example_per_class_is_enough_to_learn_from():
    X_all, y_all = _classes(60, seed=10)
    first = [np.flatnonzero(y_all == k)[0] for k in range(3)]
    X, y = X_all[first], y_all[first]
    X_test, y_test = _classes(300, seed=11)
    for adapter in (GDA(0.5), GDA(1.0), TipAdapter(5.5)):
        scores = adapter.fit(X, y, 3).decision_function(X_test)
        assert np.isfinite(scores).all() and (scores.argmax(axis=1) == y_test).mean() > 0.8
