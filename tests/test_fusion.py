import dataclasses
import numpy as np
import pytest
import torch

from clipft.catalogue import CatalogueError, load_catalogue
from clipft.fusion import ProductFeatures, resolve_inputs, title_dropout_mask
from clipft.labeller import Labeller
from clipft.prompts import load_prompt_spec
from clipft.scoring import EncodeOptions, score_chunk
from clipft.zeroshot import ZeroShotClassifier
from conftest import REPO

COLOR = load_prompt_spec(REPO / "prompts" / "color.yaml")


def toy_features(inputs, weight=0.5):
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(4, 8, generator=gen)
    vocabulary = {t: torch.randn(8, generator=gen) for t in ("red mug", "blue pan", "")}
    return ProductFeatures(lambda rows: images[torch.as_tensor(rows)],
                           lambda texts: torch.stack([vocabulary[t] for t in texts]),
                           np.array(["red mug", None, "blue pan", None], dtype=object), inputs, weight), images


def test_fusion_with_weight_zero_is_the_image_alone_and_missing_titles_fall_back():
    fused, images = toy_features("fusion", 0.0)
    image_only, _ = toy_features("image")
    rows = np.arange(4)
    torch.testing.assert_close(fused(rows), image_only(rows))
    half = dataclasses.replace(fused, weight=0.5)(rows)
    unit = torch.nn.functional.normalize(images, dim=-1)
    torch.testing.assert_close(half[[1, 3]], unit[[1, 3]])  # no title: the photo alone
    assert not torch.allclose(half[[0, 2]], unit[[0, 2]])  # a title moves the embedding
    torch.testing.assert_close(dataclasses.replace(fused, weight=1.0)(rows)[[0, 2]], toy_features("text")[0](rows)[[0, 2]])


def test_text_only_without_a_title_has_nothing_to_go_on():
    text, _ = toy_features("text")
    out = text(np.arange(4))
    assert torch.count_nonzero(out[[1, 3]]) == 0
    assert torch.count_nonzero(text.without_titles()(np.arange(4))) == 0


def test_dropped_titles_fall_back_like_missing_ones():
    fused, _ = toy_features("fusion", 0.7)
    image_only, _ = toy_features("image")
    dropped = fused(np.arange(4), drop=np.array([True, False, True, False]))
    torch.testing.assert_close(dropped, image_only(np.arange(4)))


def test_title_dropout_rate_is_honoured_and_seeded():
    masks = [title_dropout_mask(20000, 0.3, np.random.default_rng(seed)) for seed in (1, 1, 2)]
    assert abs(masks[0].mean() - 0.3) < 0.015
    assert np.array_equal(masks[0], masks[1]) and not np.array_equal(masks[0], masks[2])
    assert not title_dropout_mask(100, 0.0, np.random.default_rng(0)).any()
    assert title_dropout_mask(100, 1.0, np.random.default_rng(0)).all()


def test_zeroshot_fusion_weight_zero_equals_image_only_on_a_catalogue(tiny_model, sample_catalogue, tmp_path):
    model, preprocess, tokenizer = tiny_model
    catalogue = load_catalogue(sample_catalogue)
    assert catalogue.title_column == "title"
    options = EncodeOptions(cache_dir=str(tmp_path), device="cpu")
    scored = {
        name: score_chunk(Labeller.zero_shot(model, preprocess, tokenizer, [COLOR], inputs, weight, "cpu", tmp_path),
                          catalogue, options, progress=False)
        for name, inputs, weight in (("image", "image", 0.5), ("w0", "fusion", 0.0), ("w.5", "fusion", 0.5),
                                     ("text", "text", 0.5))
    }
    np.testing.assert_allclose(scored["w0"].proba["color"], scored["image"].proba["color"], rtol=1e-5, atol=1e-6)
    assert not np.allclose(scored["w.5"].proba["color"], scored["image"].proba["color"])
    assert scored["text"].encoded == 0 and set(scored["text"].scored_on) == {"title"}
    assert set(scored["w.5"].scored_on) == {"image+title"}


def test_text_only_scores_are_uniform_without_a_title(tiny_model):
    model, _, tokenizer = tiny_model
    clf = ZeroShotClassifier(model, tokenizer, COLOR, cache=False).fit()
    proba = clf.predict_proba(np.zeros((2, clf.weights_.shape[1]), dtype=np.float32))
    np.testing.assert_allclose(proba, 1 / len(COLOR.classes))


def test_text_and_fusion_need_a_title_column(tmp_path):
    csv = tmp_path / "c.csv"
    csv.write_text("id,image\n1,a.jpg\n")
    catalogue = load_catalogue(csv)
    assert resolve_inputs(None, catalogue) == "image"
    with pytest.raises(CatalogueError, match="title"):
        resolve_inputs("text", catalogue)
