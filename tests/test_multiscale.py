import pytest
import torch
import torch.nn.functional as F

from clipft.models import ModelLoadError, image_stages, load_model
from clipft.multiscale import add_stages, pool_stage
from clipft.offline_model import create_lite0_minilm

MULTISCALE_TINY = "clipft-tiny-multiscale"


def tiny(name, seed=0):
    torch.manual_seed(seed)
    return load_model(name, "random")[0]


def test_stages_come_from_the_json_config():
    assert image_stages("lite0-minilm") == 7 and image_stages(MULTISCALE_TINY) == 1
    assert image_stages("clipft-tiny") == 0 and image_stages("ViT-B-32") == 0


def test_vit_stages_start_at_zero_so_the_model_embeds_as_before():
    plain, staged = tiny("clipft-tiny"), tiny(MULTISCALE_TINY)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(staged.encode_image(x), plain.encode_image(x))
        staged.visual.head.proj.weight.normal_()
        assert not torch.allclose(staged.encode_image(x), plain.encode_image(x))  # the stages do reach the embedding


def test_vit_stage_is_the_normalised_class_token_of_the_block_before_the_last():
    model = tiny(MULTISCALE_TINY)
    vit = model.visual.trunk
    x = torch.randn(2, 3, 32, 32)
    seen = {}
    handle = vit.transformer.resblocks[0].register_forward_hook(lambda m, a, out: seen.setdefault("block0", out))
    with torch.no_grad():
        features = vit(x)
    handle.remove()
    embedding, stage = features[:, :32], features[:, 32:]
    torch.testing.assert_close(stage, F.layer_norm(seen["block0"][:, 0], (64,)))
    torch.testing.assert_close(stage.mean(dim=1), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(embedding, model.visual.head(torch.cat([embedding, torch.zeros_like(stage)], 1)))


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


def test_a_tower_without_stages_is_refused():
    model = tiny(MULTISCALE_TINY)
    with pytest.raises(ValueError, match="image_stages: 5 is not between 1 and the 1 stages"):
        add_stages(tiny("clipft-tiny"), 5)
    with pytest.raises(ValueError, match="neither"):
        add_stages(model, 1)  # already a (trunk, head) tower whose trunk has no blocks


def test_a_single_scale_lite0_checkpoint_is_refused_with_what_to_do(tmp_path):
    model, _ = create_lite0_minilm(from_checkpoint=True)  # the towers without stages, as aligned before
    torch.save({"state_dict": model.state_dict()}, tmp_path / "old.pt")
    with pytest.raises(ModelLoadError, match="predates multi-scale features: align again with `clipft align`"):
        load_model("lite0-minilm", str(tmp_path / "old.pt"))
