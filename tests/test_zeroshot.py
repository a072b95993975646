import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError

from clipft.prompts import parse_prompt_spec
from clipft.zeroshot import ZeroShotClassifier, ensemble_prompts

SPEC = parse_prompt_spec(
    {
        "attribute": "colour",
        "column": "c",
        "templates": ["{}", "a {} thing"],
        "classes": {"Red": None, "Blue": ["blue", "navy"]},
    }
)


class FakeTextModel(torch.nn.Module):
    """encode_text maps each prompt to a fixed 3-d vector; logit scale 10."""

    VECTORS = {
        "Red": [1, 0, 0], "a Red thing": [1, 1, 0],
        "blue": [0, 0, 2], "a blue thing": [0, 0, 1], "navy": [0, 1, 1], "a navy thing": [0, 1, 1],
    }

    def __init__(self):
        super().__init__()
        self.logit_scale = torch.nn.Parameter(torch.tensor(np.log(10.0)))
        self.calls = 0

    def encode_text(self, tokens):
        self.calls += 1
        return torch.tensor([self.VECTORS[t] for t in tokens], dtype=torch.float32)


def identity_tokenizer(texts):
    class Tokens(list):
        def to(self, device):
            return self

    return Tokens(texts)


def test_ensemble_is_the_normalised_mean_of_normalised_prompts():
    out = ensemble_prompts([np.array([[2.0, 0.0], [0.0, 3.0]]), np.array([[0.0, 5.0]])])
    s = np.sqrt(0.5)
    np.testing.assert_allclose(out, [[s, s], [0.0, 1.0]])


def test_classifier_uses_every_template_and_synonym(tmp_path):
    model = FakeTextModel()
    clf = ZeroShotClassifier(model, identity_tokenizer, SPEC, cache_dir=tmp_path).fit()
    red = ensemble_prompts([np.array([[1.0, 0, 0], [1, 1, 0]])])[0]
    blue = ensemble_prompts([np.array([[0, 0, 2.0], [0, 0, 1], [0, 1, 1], [0, 1, 1]])])[0]
    np.testing.assert_allclose(clf.weights_, [red, blue], rtol=1e-6)
    images = np.array([[3.0, 0.5, 0.0], [0.0, 0.2, 4.0]])
    logits = 10 * (images / np.linalg.norm(images, axis=1, keepdims=True)) @ np.stack([red, blue]).T
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(clf.predict_proba(images), expected, rtol=1e-5)
    assert clf.predict(images).tolist() == ["Red", "Blue"]


def test_class_weights_are_cached_per_model(tmp_path):
    model = FakeTextModel()
    ZeroShotClassifier(model, identity_tokenizer, SPEC, cache_dir=tmp_path).fit()
    ZeroShotClassifier(model, identity_tokenizer, SPEC, cache_dir=tmp_path).fit()
    assert model.calls == 1


def test_unfitted_classifier_raises():
    with pytest.raises(NotFittedError):
        ZeroShotClassifier(FakeTextModel(), identity_tokenizer, SPEC).predict(np.ones((1, 3)))



def test_a_log_prior_is_added_to_every_score(tmp_path):
    from clipft.training.tasks import class_log_prior

    prior = class_log_prior(np.array(["Red", "Red", "Blue"]), ["Red", "Blue", "Green"])
    np.testing.assert_allclose(prior, np.log([3 / 6, 2 / 6, 1 / 6]))
    plain = ZeroShotClassifier(FakeTextModel(), identity_tokenizer, SPEC, cache_dir=tmp_path).fit()
    adjusted = ZeroShotClassifier(FakeTextModel(), identity_tokenizer, SPEC, cache_dir=tmp_path,
                                  log_prior=prior[:2]).fit()
    images = np.array([[3.0, 0.5, 0.0], [0.0, 0.2, 4.0], [1.0, 1.0, 1.0]])
    np.testing.assert_allclose(adjusted.decision_function(images), plain.decision_function(images) + prior[:2],
                               rtol=1e-5)


def test_a_prompt_file_cut_to_nothing_stops_zeroshot_before_any_photo_is_read(tmp_path, sample_catalogue):
    from conftest import run

    words = " ".join(["plain"] * 20)  # more than the tiny model's 16 tokens before the class text
    prompts = tmp_path / "long.yaml"
    prompts.write_text(f"attribute: color\ncolumn: baseColour\ntemplates: ['a {words} {{}}']\nclasses: [Red, Blue]\n")
    result = run(["zeroshot", "--prompts", str(prompts), "--data", str(sample_catalogue), "--out", str(tmp_path / "out"),
                  "--model", "clipft-tiny", "--cache-dir", str(tmp_path / "cache"), "--device", "cpu"], expect=1)
    assert f"{prompts}: template 'a {words} {{}}' leaves no room for the class text" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "cache" / "image").exists()  # refused before the image pass
