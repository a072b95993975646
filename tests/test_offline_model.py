import pytest
import torch
from PIL import Image
from sklearn.datasets import load_sample_image
from timm.data import ImageNetInfo

from clipft.models import load_model
from clipft.offline_model import (
    LITE0_MEAN,
    LITE0_STD,
    convert_efficientnet_lite0_state_dict,
    load_efficientnet_lite0_imagenet,
    minilm_path,
)


@pytest.fixture(scope="module")
def imagenet_net():
    return load_efficientnet_lite0_imagenet()


def imagenet_top1(net, image: Image.Image) -> str:
    import torchvision.transforms as T

    transform = T.Compose([T.Resize(224), T.CenterCrop(224), T.ToTensor(), T.Normalize(LITE0_MEAN, LITE0_STD)])
    with torch.no_grad():
        index = net(transform(image.convert("RGB"))[None]).argmax().item()
    return ImageNetInfo().index_to_description(index)


@pytest.mark.parametrize("photo, label", [("flower.jpg", "daisy"), ("china.jpg", "palace")])
def test_imagenet_head_recognises_real_photos(imagenet_net, photo, label):
    # scikit-learn ships these two real photos, so this runs everywhere.
    assert imagenet_top1(imagenet_net, Image.fromarray(load_sample_image(photo))) == label


@pytest.mark.parametrize("product_id, label", [("1525", "backpack"), ("1163", "jersey")])
def test_imagenet_head_on_fashion_photos(imagenet_net, fashion_dir, product_id, label):
    top1 = imagenet_top1(imagenet_net, Image.open(fashion_dir / "images" / f"{product_id}.jpg"))
    assert top1.startswith(label)


def test_conversion_refuses_a_shape_mismatch():
    source = {"a": torch.zeros(3, 3), "b": torch.zeros(2)}
    with pytest.raises(RuntimeError, match="does not match"):
        convert_efficientnet_lite0_state_dict(source, {"x": (3, 3), "y": (4,)})
    with pytest.raises(RuntimeError, match="2 tensors"):
        convert_efficientnet_lite0_state_dict(source, {"x": (3, 3)})


def test_offline_model_is_built_from_both_pretrained_towers(imagenet_net):
    from transformers import AutoModel

    model, preprocess, tokenizer = load_model("lite0-minilm")
    # image tower: the ImageNet EfficientNet-Lite0 without its classifier
    trunk = model.visual.trunk.state_dict()
    for key, value in imagenet_net.state_dict().items():
        if not key.startswith("classifier"):
            assert torch.equal(trunk[key], value), key
    # text tower: the packaged all-MiniLM-L6-v2, loaded from its package folder
    minilm = AutoModel.from_pretrained(str(minilm_path()))
    text = model.text.transformer.state_dict()
    assert all(torch.equal(text[k], v) for k, v in minilm.state_dict().items() if k in text)
    assert preprocess.transforms[-1].mean == LITE0_MEAN
    with torch.no_grad():
        assert model.encode_text(tokenizer(["navy blue", "a mug with a lid"])).shape == (2, 384)
        assert model.encode_image(torch.zeros(1, 3, 224, 224)).shape == (1, 384)
    assert model.logit_scale.exp().item() == pytest.approx(1 / 0.07, rel=1e-4)


def test_text_tower_can_be_partly_locked():
    from clipft.training.config import TowersCfg
    from clipft.training.weights import lock_towers

    model, _, _ = load_model("lite0-minilm")
    lock_towers(model, TowersCfg(lock_text=True, unlocked_text_layers=2))
    trainable = {n for n, p in model.text.named_parameters() if p.requires_grad}
    assert any(n.startswith("transformer.encoder.layer.5.") for n in trainable)
    assert any(n.startswith("transformer.encoder.layer.4.") for n in trainable)
    assert not any(n.startswith(("transformer.encoder.layer.3.", "transformer.embeddings.")) for n in trainable)
    assert "proj.weight" in trainable
