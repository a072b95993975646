import json
import re

import numpy as np
import pytest
import torch

from clipft.training.checkpoint import RunCheckpoints
from clipft.training.config import ConfigError, build_config, flat_config
from clipft.catalogue import load_catalogue
from clipft.cache.encoding import encode_images
from clipft.fusion import ProductFeatures
from clipft.cache.image_features import CachedImageFeatures, FrozenEncoder, LiveImageFeatures, frozen_split
from clipft.models import TINY_MODEL, load_model
from clipft.prompts import load_prompt_spec
from clipft.commands.sample_data import make_catalogue
from clipft.training.tasks import attribute_task, sample_shots
from clipft.cache.text_features import LiveTextFeatures
from clipft.training.loop import TrainingDiverged, fit
from clipft.training.weights import lock_towers, wise_ft
from conftest import REPO

COLOR = load_prompt_spec(REPO / "prompts" / "color.yaml")


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    return load_catalogue(make_catalogue(tmp_path_factory.mktemp("train"), n=24, size=32, seed=0))


def cfg(**changes):
    base = dict(prompts=["color.yaml"], epochs=2, batch_size=8, lr=1e-3, warmup_steps=1, patience=10)
    return build_config({**base, **changes})


def checkpoints(out, config):
    return RunCheckpoints(out, flat_config(config)) if out is not None else None


def new_model(name=TINY_MODEL):
    torch.manual_seed(0)
    return load_model(name)


def image_only(image_fn, catalogue):
    return ProductFeatures(image_fn, None, catalogue.titles())


def colour_task(catalogue, **kwargs):
    return attribute_task(COLOR, catalogue.frame["baseColour"], np.arange(len(catalogue)), False, None, 0, **kwargs)


def train(catalogue, out, config, evaluate=lambda: {"loss": 0.0}, fast=True, name=TINY_MODEL, cache=None):
    model, preprocess, tokenizer = new_model(name)
    frozen = lock_towers(model, config.towers)
    if fast:
        trunk, head = frozen_split(model)
        encoding = encode_images(FrozenEncoder(trunk), preprocess, catalogue.image_paths, cache or out / "cache",
                                 progress=False)
        image_fn = CachedImageFeatures(encoding.embeddings, head)
    else:
        image_fn = LiveImageFeatures(model, catalogue.image_paths, preprocess)
    result = fit(model, [colour_task(catalogue)], image_only(image_fn, catalogue), LiveTextFeatures(model, tokenizer),
                 evaluate, config.optim, config.runtime.seed, checkpoints(out, config), frozen, progress=False)
    return model, result


@pytest.mark.slow
@pytest.mark.parametrize("name", [TINY_MODEL, "clipft-tiny-multiscale", "lite0-minilm"])
def test_locked_image_fast_path_equals_the_slow_path(tmp_path, catalogue, name):
    # lite0-minilm: locked trunk from the cache, trainable projection; tiny ViT: the whole tower
    # locked; multi-scale tiny ViT: the ViT and its stages cached, the stages' projection trains.
    config = cfg(lock_image=True, epochs=1 if name != TINY_MODEL else 2)
    fast, _ = train(catalogue, tmp_path / "fast", config, fast=True, name=name)
    slow, _ = train(catalogue, tmp_path / "slow", config, fast=False, name=name)
    for key, value in fast.state_dict().items():
        torch.testing.assert_close(value, slow.state_dict()[key], rtol=1e-4, atol=1e-5, msg=key)
    initial = new_model(name)[0].state_dict()
    assert not torch.equal(fast.state_dict()["logit_scale"], initial["logit_scale"])  # it did train


@pytest.mark.slow
def test_unlocked_trunk_blocks_train_on_cached_activations_as_on_photos(tmp_path, catalogue):
    # The last two groups of lite0's trunk (its last two blocks, conv_head) unlocked: the fast
    # path caches the activation before them and trains them, the stages and the projection.
    config = cfg(lock_image=True, unlocked_image_groups=2, epochs=1)
    fast, _ = train(catalogue, tmp_path / "fast", config, fast=True, name="lite0-minilm")
    slow, _ = train(catalogue, tmp_path / "slow", config, fast=False, name="lite0-minilm")
    initial = new_model("lite0-minilm")[0].state_dict()
    for key, value in fast.state_dict().items():
        torch.testing.assert_close(value, slow.state_dict()[key], rtol=1e-4, atol=1e-5, msg=key)
    assert not torch.equal(fast.state_dict()["visual.trunk.blocks.6.0.conv_pwl.weight"],
                           initial["visual.trunk.blocks.6.0.conv_pwl.weight"])  # the unlocked block trained
    torch.testing.assert_close(fast.state_dict()["visual.trunk.blocks.5.2.conv_pwl.weight"],
                               initial["visual.trunk.blocks.5.2.conv_pwl.weight"], rtol=0, atol=0)


def test_best_epoch_is_the_lowest_validation_loss_and_patience_stops(tmp_path, catalogue):
    losses = iter([3.0, 1.0, 2.0, 4.0, 0.5, 0.1])
    snapshots = []
    model_holder = {}

    def evaluate():
        snapshots.append({k: v.clone() for k, v in model_holder["model"].state_dict().items()})
        return {"loss": next(losses)}

    model, preprocess, tokenizer = new_model()
    model_holder["model"] = model
    config = cfg(epochs=6, patience=2)
    frozen = lock_towers(model, config.towers)
    trunk, head = frozen_split(model)
    features = encode_images(FrozenEncoder(trunk), preprocess, catalogue.image_paths, tmp_path / "c", progress=False)
    result = fit(model, [colour_task(catalogue)], image_only(CachedImageFeatures(features.embeddings, head), catalogue),
                 LiveTextFeatures(model, tokenizer), evaluate, config.optim, config.runtime.seed,
                 checkpoints(tmp_path, config), frozen, progress=False)
    assert result.best_epoch == 2 and result.best_val_loss == 1.0
    assert len(result.history) == 4 and result.stopped == "early stopping"  # epochs 3 and 4 were worse
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert best["epoch"] == 2
    for key, value in best["state_dict"].items():
        assert torch.equal(value, snapshots[1][key]), key
    assert (tmp_path / "history.csv").read_text().count("\n") == 5


def test_interrupted_training_resumes_to_the_same_result(tmp_path, catalogue):
    config = cfg(epochs=3)
    straight, _ = train(catalogue, tmp_path / "straight", config, cache=tmp_path / "cache")

    calls = {"n": 0}

    def interrupt_on_third_epoch():
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return {"loss": 0.0}

    with pytest.raises(KeyboardInterrupt):
        train(catalogue, tmp_path / "resumed", config, interrupt_on_third_epoch, cache=tmp_path / "cache")
    state = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)
    assert state["epoch"] == 1  # epochs 1 and 2 (0-based 0, 1) were saved
    resumed, result = train(catalogue, tmp_path / "resumed", config, cache=tmp_path / "cache")
    assert len(result.history) == 3
    for key, value in straight.state_dict().items():
        torch.testing.assert_close(value, resumed.state_dict()[key], rtol=0, atol=1e-6, msg=key)


def test_resume_refuses_a_run_with_other_settings(tmp_path, catalogue):
    train(catalogue, tmp_path, cfg(epochs=1), cache=tmp_path / "cache")
    with pytest.raises(ConfigError, match="lr"):
        train(catalogue, tmp_path, cfg(epochs=1, lr=0.5), cache=tmp_path / "cache")


def test_resume_refuses_a_last_pt_with_another_models_weights(tmp_path, catalogue):
    """A last.pt written by a release whose model had other parameters (lite0-minilm before its
    bag of title words) stops with one line naming it, not a strict load's traceback."""
    train(catalogue, tmp_path, cfg(epochs=1), cache=tmp_path / "cache")
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    dropped = sorted(state["state_dict"])[0]
    original = state["state_dict"].pop(dropped)
    torch.save(state, tmp_path / "last.pt")
    with pytest.raises(ConfigError, match=rf"last.pt holds weights of another model \(1 missing, 0 unexpected, 0 of "
                                          rf"another shape: missing {re.escape(dropped)}\).*another --out"):
        train(catalogue, tmp_path, cfg(epochs=2), cache=tmp_path / "cache")
    kept = sorted(state["state_dict"])[-1]  # the same names, one tensor of another shape
    state["state_dict"][dropped] = original
    state["state_dict"][kept] = torch.zeros(*state["state_dict"][kept].shape, 2)
    torch.save(state, tmp_path / "last.pt")
    with pytest.raises(ConfigError, match=rf"1 of another shape: {re.escape(kept)} shaped"):
        train(catalogue, tmp_path, cfg(epochs=2), cache=tmp_path / "cache")


def test_last_pt_records_flat_settings_and_resumes_with_more_epochs(tmp_path, catalogue):
    config = cfg(epochs=2)
    train(catalogue, tmp_path, cfg(epochs=1), cache=tmp_path / "cache")
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["config"] == flat_config(cfg(epochs=1))  # flat, as runs recorded it before the config had sections
    _, result = train(catalogue, tmp_path, config, cache=tmp_path / "cache")  # more epochs: allowed
    assert [row["epoch"] for row in result.history] == [1, 2]


def test_a_diverging_run_is_a_training_error_not_a_config_error(tmp_path, catalogue):
    with pytest.raises(TrainingDiverged, match="try a lower lr") as caught:
        train(catalogue, tmp_path, cfg(epochs=3, lr=1e9, grad_clip=0), cache=tmp_path / "cache")
    assert isinstance(caught.value, RuntimeError) and not isinstance(caught.value, ConfigError)


def test_wise_ft_interpolates_float_weights_only():
    zs = {"w": torch.tensor([0.0, 2.0]), "steps": torch.tensor(1)}
    ft = {"w": torch.tensor([4.0, 6.0]), "steps": torch.tensor(7)}
    assert torch.equal(wise_ft(zs, ft, 0.25)["w"], torch.tensor([1.0, 3.0]))
    assert torch.equal(wise_ft(zs, ft, 0.0)["w"], zs["w"]) and torch.equal(wise_ft(zs, ft, 1.0)["w"], ft["w"])
    assert wise_ft(zs, ft, 0.5)["steps"].item() == 7


def test_shots_and_template_captions(catalogue):
    labels = np.array(["a"] * 10 + ["b"] * 3)
    kept = sample_shots(labels, 4, seed=0)
    assert (labels[kept] == "a").sum() == 4 and (labels[kept] == "b").sum() == 3
    assert (sample_shots(labels, 4, seed=0) == kept).all()
    task = attribute_task(COLOR, catalogue.frame["baseColour"], np.arange(len(catalogue)), True, None, 0)
    captions = task.captions(np.arange(len(task.rows)), np.random.default_rng(1))
    by_class = {}
    for value, caption in zip(task.texts, captions):
        by_class.setdefault(value, set()).add(caption)
        assert caption in COLOR.prompts_for(value)
    assert all(len(c) == 1 for c in by_class.values())  # one caption per class within a batch
    assert captions == task.captions(np.arange(len(task.rows)), np.random.default_rng(1))


def test_hard_negatives_swap_one_class_word():
    from clipft.prompts import parse_prompt_spec
    from clipft.training.tasks import swap_attribute_word, swap_vocabulary

    gender = parse_prompt_spec({"attribute": "g", "column": "g", "templates": ["{}"],
                                "classes": {"Men": None, "Women": None, "Boys": ["Kids Boys"]}})
    vocabulary = swap_vocabulary([gender, COLOR])
    rng = np.random.default_rng(0)
    swaps = {swap_attribute_word("Puma Men Black Running Shoes", vocabulary, rng) for _ in range(300)}
    assert "Puma Women Black Running Shoes" in swaps and "Puma Men White Running Shoes" in swaps
    assert all(s.startswith("Puma ") and s.endswith(" Running Shoes") for s in swaps)
    assert "Puma Men Black Running Shoes" not in swaps  # always a different class
    assert all("Women Women" not in s for s in swaps)
    assert "Puma Men white Running Shoes" not in swaps  # the capital of the matched word is kept
    assert swap_attribute_word("Acme Ceramic Mug", vocabulary, rng) is None
    assert swap_attribute_word("Womens Cap", vocabulary, rng) is None  # whole words only


def test_cached_text_features_equal_the_live_text_tower(tmp_path):
    from clipft.cache.text_features import CachedTextFeatures, text_features

    model, _, tokenizer = new_model("lite0-minilm")
    lock_towers(model, cfg(lock_text=True).towers)
    model.eval()
    cached = text_features(model, tokenizer, cache_dir=tmp_path)
    assert isinstance(cached, CachedTextFeatures)
    texts = ["Navy Blue", "Puma Men Black Running Shoes", "Navy Blue"]
    with torch.no_grad():
        torch.testing.assert_close(cached(texts), LiveTextFeatures(model, tokenizer)(texts), rtol=1e-4, atol=1e-5)
    assert len(CachedTextFeatures(model.text, tokenizer, cache_dir=tmp_path).store) == 2  # reloaded from disk
    assert cached(texts).requires_grad  # the projection still trains
    assert isinstance(text_features(new_model("lite0-minilm")[0], tokenizer), LiveTextFeatures)  # unlocked


def test_title_dropout_in_training_is_seeded_and_at_its_rate(tmp_path, catalogue):
    def dropped_titles(out):
        model, preprocess, tokenizer = new_model()
        config = cfg(title_dropout=0.5, epochs=3)
        frozen = lock_towers(model, config.towers)
        encoding = encode_images(model, preprocess, catalogue.image_paths, tmp_path / "cache", progress=False)
        features = ProductFeatures(CachedImageFeatures(encoding.embeddings, torch.nn.Identity()),
                                   LiveTextFeatures(model, tokenizer), catalogue.titles(), "fusion")
        masks = []

        def recording(rows, drop=None):
            masks.append(drop.copy())
            return features(rows, drop)

        fit(model, [colour_task(catalogue)], recording, LiveTextFeatures(model, tokenizer), lambda: {"loss": 0.0},
            config.optim, config.runtime.seed, checkpoints(out, config), frozen, progress=False)
        return np.concatenate(masks)

    first, second = dropped_titles(tmp_path / "a"), dropped_titles(tmp_path / "b")
    assert np.array_equal(first, second) and len(first) == 3 * 24
    assert 0.3 < first.mean() < 0.7


def test_validate_start_keeps_the_starting_weights_when_no_epoch_beats_them(catalogue):
    model, preprocess, tokenizer = new_model()
    config = cfg(epochs=2, validate_start=True)
    frozen = lock_towers(model, config.towers)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    losses = iter([0.5, 1.0, 0.7])
    result = fit(model, [colour_task(catalogue)], image_only(LiveImageFeatures(model, catalogue.image_paths, preprocess),
                                                              catalogue),
                 LiveTextFeatures(model, tokenizer), lambda: {"loss": next(losses)}, config.optim, 0, None,
                 frozen, progress=False)
    assert result.best_epoch == 0 and [row["epoch"] for row in result.history] == [0, 1, 2]
    for key, value in result.best_state.items():
        torch.testing.assert_close(value, initial[key], msg=key)


def test_mirrored_cached_copies_are_drawn_half_the_time_and_seeded(catalogue):
    from PIL import Image, ImageOps

    from clipft.cache.image_features import Mirrored

    model, preprocess, _ = new_model()
    photo = Image.open(catalogue.image_paths[0]).convert("RGB")
    torch.testing.assert_close(Mirrored(preprocess)(photo), preprocess(ImageOps.mirror(photo)))
    assert repr(Mirrored(preprocess)) != repr(preprocess)  # its own cache key
    features, flipped = np.zeros((4, 3), dtype=np.float32), np.ones((4, 3), dtype=np.float32)
    image_fn = CachedImageFeatures(features, torch.nn.Identity(), flipped=flipped)
    torch.manual_seed(0)
    draws = torch.stack([image_fn(np.arange(4))[:, 0] for _ in range(200)])
    assert set(draws.unique().tolist()) == {0.0, 1.0} and abs(draws.mean().item() - 0.5) < 0.05
    torch.manual_seed(0)
    torch.testing.assert_close(image_fn(np.arange(4)), draws[0][:, None].expand(4, 3))


def test_augmented_fast_path_trains_on_mirrored_photos(tmp_path):
    from clipft.commands.finetune import run_finetune
    from clipft.commands.prepare import prepare_run

    data = make_catalogue(tmp_path / "cat", n=24, size=32, seed=3)
    base = dict(data=str(data), prompts=[str(REPO / "prompts" / "color.yaml")], model="clipft-tiny-multiscale",
                epochs=2, batch_size=8, lr_head=1e-2, warmup_steps=1, wise_alphas=[1.0], inputs="image",
                cache_dir=str(tmp_path / "cache"))
    run = prepare_run(build_config({**base, "augment": True}), tmp_path / "prep", progress=False)
    from PIL import Image, ImageOps

    photos = [ImageOps.mirror(Image.open(p).convert("RGB")) for p in run.catalogue.image_paths]
    with torch.no_grad():
        expected = frozen_split(run.model)[0](torch.stack([run.preprocess(p) for p in photos])).numpy()
    np.testing.assert_allclose(run.flipped, expected, rtol=1e-4, atol=1e-5)
    plain = run_finetune(build_config(base), tmp_path / "plain", progress=False)
    augmented = run_finetune(build_config({**base, "augment": True}), tmp_path / "augmented", progress=False)
    assert json.loads((tmp_path / "augmented" / "summary.json").read_text())["fast_path"] is True
    first = torch.load(tmp_path / "plain" / "last.pt", weights_only=True)["state_dict"]["visual.head.proj.weight"]
    second = torch.load(tmp_path / "augmented" / "last.pt", weights_only=True)["state_dict"]["visual.head.proj.weight"]
    assert not torch.equal(first, second) and plain.best_epoch >= 0 and augmented.best_epoch >= 0
