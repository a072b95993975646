import pytest
import torch
import torch.nn.functional as F

from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

from clipft.cache.encoding import image_store
from clipft.cache.image_features import FrozenEncoder
from clipft.model_registry import image_stages
from clipft.models import ModelLoadError, load_model, tower_fingerprint
from clipft.multiscale import ColourHistogram, add_stages, pool_stage
from clipft.offline_model import create_lite0_minilm

MULTISCALE_TINY = "clipft-tiny-multiscale"


def tiny(name, seed=0):
    torch.manual_seed(seed)
    return load_model(name, "random")[0]


def test_stages_come_from_the_json_config():
    assert image_stages("lite0-minilm") == (7, 8) and image_stages(MULTISCALE_TINY) == (1, 4)
    assert image_stages("clipft-tiny") == (0, 0) and image_stages("ViT-B-32") == (0, 0)


def test_vit_stages_start_at_zero_so_the_model_embeds_as_before():
    plain, staged = tiny("clipft-tiny"), tiny(MULTISCALE_TINY)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(staged.encode_image(x), plain.encode_image(x))
        staged.visual.head.proj.weight.normal_()
        assert not torch.allclose(staged.encode_image(x), plain.encode_image(x))  # the stages do reach the embedding


def test_vit_stages_are_the_colour_histogram_then_the_class_token_of_the_block_before_the_last():
    model = tiny(MULTISCALE_TINY)
    vit = model.visual.trunk
    x = torch.randn(2, 3, 32, 32)
    seen = {}
    handle = vit.transformer.resblocks[0].register_forward_hook(lambda m, a, out: seen.setdefault("block0", out))
    with torch.no_grad():
        features = vit(x)
    handle.remove()
    embedding, histogram, stage = features[:, :32], features[:, 32:96], features[:, 96:]
    torch.testing.assert_close(histogram, ColourHistogram(OPENAI_DATASET_MEAN, OPENAI_DATASET_STD, bins=4)(x))
    torch.testing.assert_close(stage, F.layer_norm(seen["block0"][:, 0], (64,)))
    torch.testing.assert_close(stage.mean(dim=1), torch.zeros(2), atol=1e-5, rtol=0)
    stages = features[:, 32:]
    torch.testing.assert_close(embedding, model.visual.head(torch.cat([embedding, torch.zeros_like(stages)], 1)))


def photo_tensor(rgb: torch.Tensor) -> torch.Tensor:
    """A (3, H, W) image on [0, 1] as lite0's preprocessing gives it (mean and std 0.5)."""
    return ((rgb - 0.5) / 0.5)[None]


def test_colour_histogram_counts_the_product_not_the_background():
    image = torch.ones(3, 64, 64)  # a white studio background
    image[:, 16:48, 20:44] = torch.tensor([0.9, 0.1, 0.1])[:, None, None]  # a red product
    image[:, 30:34, 30:34] = torch.tensor([0.1, 0.1, 0.9])[:, None, None]  # with a blue logo
    histogram = ColourHistogram((0.5,) * 3, (0.5,) * 3, bins=2)
    mask = histogram.foreground(image[None])[0]
    assert mask.sum() == 32 * 24 and mask[16:48, 20:44].all()
    red, blue = 1 * 4 + 0 * 2 + 0, 0 * 4 + 0 * 2 + 1  # cells (r, g, b) of bins 2
    share = {red: (32 * 24 - 16) / (32 * 24), blue: 16 / (32 * 24)}
    expected = torch.zeros(1, 8)
    for cell, p in share.items():
        expected[0, cell] = p ** 0.5
    torch.testing.assert_close(histogram(photo_tensor(image)), F.layer_norm(expected, (8,)))
    # Where nothing stands out from the border the whole photo counts: one colour, one cell.
    plain = histogram(photo_tensor(torch.full((3, 64, 64), 0.2)))
    assert plain.argmax().item() == 0 and torch.isfinite(plain).all()
    torch.testing.assert_close(histogram(photo_tensor(image.flip(-1))), histogram(photo_tensor(image)))
    # Every second pixel of each row and column is counted, the others are not read.
    every_pixel = ColourHistogram((0.5,) * 3, (0.5,) * 3, bins=2, stride=1)
    striped = image.clone()
    striped[:, 1::2] = torch.tensor([0.1, 0.9, 0.1])[:, None, None]  # green on the rows it skips
    torch.testing.assert_close(histogram(photo_tensor(striped)), every_pixel(photo_tensor(image[:, ::2, ::2])))


def test_locking_leaves_the_stages_projection_trainable():
    model = tiny(MULTISCALE_TINY)
    model.lock_image_tower(unlocked_groups=0)
    assert [n for n, p in model.named_parameters() if p.requires_grad and n.startswith("visual.")] == [
        "visual.head.proj.weight"]
    model = tiny(MULTISCALE_TINY)
    model.lock_image_tower(unlocked_groups=1)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad and n.startswith("visual.")}
    assert "visual.head.proj.weight" in trainable and "visual.trunk.proj" in trainable
    assert not any(n.startswith("visual.trunk.transformer.resblocks.0.") for n in trainable)


def test_checkpoint_round_trip_keeps_the_stages(tmp_path):
    model = tiny(MULTISCALE_TINY)
    with torch.no_grad():
        model.visual.head.proj.weight.normal_()
    torch.save({"state_dict": model.state_dict()}, tmp_path / "ms.pt")
    loaded = load_model(MULTISCALE_TINY, str(tmp_path / "ms.pt"))[0]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_image(x), model.encode_image(x))
    torch.save({"state_dict": tiny("clipft-tiny").state_dict()}, tmp_path / "plain.pt")
    with pytest.raises(ModelLoadError, match="not a checkpoint of clipft-tiny-multiscale"):
        load_model(MULTISCALE_TINY, str(tmp_path / "plain.pt"))


def test_lite0_stages_are_every_block_pooled_beside_the_final_features():
    model, _ = create_lite0_minilm()
    model.eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        before_trunk, before = model.visual.trunk(x), model.encode_image(x)
        add_stages(model, 7)
        outputs = []
        hooks = [b.register_forward_hook(lambda m, a, out: outputs.append(out)) for b in model.visual.trunk.blocks]
        after_trunk = model.visual.trunk(x)
        for h in hooks:
            h.remove()
        assert after_trunk.shape == (2, 1280 + 16 + 24 + 40 + 80 + 112 + 192 + 320)
        torch.testing.assert_close(after_trunk[:, :1280], before_trunk)
        torch.testing.assert_close(after_trunk[:, 1280:], torch.cat([pool_stage(o) for o in outputs], 1))
        torch.testing.assert_close(model.encode_image(x), before)  # new columns of the projection start at zero
    assert model.visual.head.proj.weight.shape == (384, 2064)


def test_lite0_colour_histogram_comes_before_the_stages():
    model, _ = create_lite0_minilm()
    model.eval()
    x = torch.rand(2, 3, 224, 224) * 2 - 1
    with torch.no_grad():
        before_trunk, before = model.visual.trunk(x), model.encode_image(x)
        add_stages(model, 1, colour_bins=8)
        after_trunk = model.visual.trunk(x)
        torch.testing.assert_close(after_trunk[:, :1280], before_trunk)
        torch.testing.assert_close(after_trunk[:, 1280:1792], ColourHistogram((0.5,) * 3, (0.5,) * 3)(x))
        assert after_trunk.shape == (2, 1280 + 512 + 320)
        torch.testing.assert_close(model.encode_image(x), before)


def test_a_tower_without_stages_is_refused():
    model = tiny(MULTISCALE_TINY)
    with pytest.raises(ValueError, match="image_stages: 5 is not between 1 and the 1 stages"):
        add_stages(tiny("clipft-tiny"), 5)
    with pytest.raises(ValueError, match="neither"):
        add_stages(model, 1)  # already a (trunk, head) tower whose trunk has no blocks


def test_a_single_scale_lite0_checkpoint_is_refused_with_what_to_do(tmp_path):
    model, _ = create_lite0_minilm(from_checkpoint=True)  # the towers without stages, as aligned before
    torch.save({"state_dict": model.state_dict()}, tmp_path / "old.pt")
    with pytest.raises(ModelLoadError, match="predates these multi-scale features: align again with `clipft align`"):
        load_model("lite0-minilm", str(tmp_path / "old.pt"))


def test_the_embedding_cache_of_a_tower_changes_with_its_stages_not_only_with_its_weights(tmp_path):
    plain, staged = tiny("clipft-tiny"), tiny(MULTISCALE_TINY)
    before, after = FrozenEncoder(plain.visual), FrozenEncoder(staged.visual.trunk)  # same weights, wider output
    assert tower_fingerprint(before, "image") == tower_fingerprint(after, "image")
    preprocess = load_model("clipft-tiny", "random")[1]
    assert image_store(before, preprocess, tmp_path).folder != image_store(after, preprocess, tmp_path).folder
