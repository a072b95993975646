import numpy as np
import pytest

from clipft.metrics import check_labels, classification_metrics


def test_metrics_match_a_hand_computed_example():
    y_true = ["a", "a", "a", "b", "b", "c"]
    y_pred = ["a", "a", "b", "b", "c", "c"]
    m = classification_metrics(y_true, y_pred)
    # accuracy: 4 of 6 right.
    assert m["accuracy"] == pytest.approx(4 / 6)
    # recalls a=2/3, b=1/2, c=1/1 -> balanced accuracy is their mean.
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    # precisions a=2/2, b=1/2, c=1/2; F1 = 2PR/(P+R): a=0.8, b=0.5, c=2/3.
    assert m["per_class"]["a"] == pytest.approx({"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3})
    assert m["per_class"]["c"]["f1"] == pytest.approx(2 / 3)
    assert m["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert m["n"] == 6


def test_predicted_class_absent_from_truth_is_a_zero_f1_class():
    m = classification_metrics(["a", "a"], ["a", "b"])
    assert m["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0) / 2)


def test_no_rows_is_an_error():
    with pytest.raises(ValueError, match="no labelled rows"):
        classification_metrics([], [])


def test_check_labels_counts_unknown_and_missing_values():
    check = check_labels(["Red", "Teal", None, "Red", " ", "Teal", "Blue"], ["Red", "Blue"])
    assert check.known.tolist() == [True, False, False, True, False, False, True]
    assert check.unknown == {"Teal": 2}
    assert check.missing == 2
    assert isinstance(check.known, np.ndarray)
