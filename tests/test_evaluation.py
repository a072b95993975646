import numpy as np
import torch
from scipy.special import log_softmax

from clipft.calibration import fit_temperature
from clipft.fusion import ProductFeatures
from clipft.prompts import parse_prompt_spec
from clipft.training.evaluation import SplitTargets, evaluate

SPEC = parse_prompt_spec({"attribute": "color", "column": "colour", "templates": ["{}"],
                          "classes": {"Red": None, "Blue": None, "Green": None}})
CLASS_VECTORS = torch.eye(3)


class Scaled(torch.nn.Module):
    """A stand-in model: only its logit scale matters to the scores."""

    def __init__(self, scale: float):
        super().__init__()
        self.logit_scale = torch.nn.Parameter(torch.tensor(float(np.log(scale))))


def text_fn(texts):
    return CLASS_VECTORS[[["Red", "Blue", "Green"].index(t) for t in texts]]


def scored(scale: float, calibrated: bool, priors=None) -> dict:
    rng = np.random.default_rng(0)
    labels = rng.choice(["Red", "Blue", "Green"], size=60)
    embeddings = text_fn(list(labels)) + torch.from_numpy(rng.normal(0, 0.8, size=(60, 3)).astype(np.float32))
    features = ProductFeatures(lambda rows: embeddings[rows], None, np.full(60, None, dtype=object))
    targets = SplitTargets({"color": np.arange(60)}, {"color": labels}, np.arange(0), np.array([], dtype=object))
    return evaluate(Scaled(scale), features, text_fn, [SPEC], targets, "label", calibrated=calibrated,
                    priors=priors)["color"] | {"labels": labels, "embeddings": embeddings}


def test_calibrated_loss_is_the_loss_at_the_best_temperature_and_ignores_over_confidence():
    sharp, sharper = scored(10.0, True), scored(40.0, True)
    raw_sharp, raw_sharper = scored(10.0, False), scored(40.0, False)
    assert sharp["accuracy"] == sharper["accuracy"] == raw_sharp["accuracy"]
    assert raw_sharper["loss"] > raw_sharp["loss"]  # the raw loss punishes a larger logit scale
    assert abs(sharper["loss"] - sharp["loss"]) < 1e-4  # the calibrated one does not
    unit = torch.nn.functional.normalize(sharp["embeddings"], dim=-1).numpy()
    logits = 10.0 * unit
    y = np.array([["Red", "Blue", "Green"].index(v) for v in sharp["labels"]])
    t = fit_temperature(logits, y)
    expected = -log_softmax(logits / t, axis=1)[np.arange(len(y)), y].mean()
    assert abs(sharp["loss"] - expected) < 1e-5 and sharp["loss"] <= raw_sharp["loss"]


def test_a_prior_moves_predictions_towards_the_common_class():
    plain = scored(10.0, False)
    favoured = scored(10.0, False, {"color": np.log([0.98, 0.01, 0.01])})
    assert favoured["accuracy"] < plain["accuracy"]  # the labels are balanced, so a skewed prior costs accuracy
