"""Model factory: the one place that turns (model name, pretrained) into a model, its
image preprocessing and its tokenizer. Every command goes through :func:`load_model`."""
from __future__ import annotations

import hashlib
import os
import pickle
import weakref

import open_clip
import torch
from open_clip.transform import PreprocessCfg, image_transform_v2

from .model_registry import image_stages, register_model_configs, title_words, without_clipft_section
from .multiscale import add_stages
from .offline_model import OFFLINE_MODEL, create_lite0_minilm
from .title_words import add_title_words, check_loaded

# A tiny randomly initialised ViT for tests and smoke runs: never downloads, runs in milliseconds.
TINY_MODEL = "clipft-tiny"

_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".npz")
RANDOM_WEIGHTS = "random"
# Where an architecture has several tags, the one most users of OpenCLIP reach for first.
_PREFERRED_TAGS = ("laion2b_s34b_b79k", "laion2b_s32b_b82k", "openai")


class ModelLoadError(RuntimeError):
    """The model or its weights cannot be loaded; the message says what to do instead."""


def list_models() -> list[str]:
    """Every architecture ``--model`` accepts: OpenCLIP's, plus clipft's own."""
    register_model_configs()
    return open_clip.list_models()


def default_pretrained(name: str) -> str | None:
    """The weights ``--pretrained`` means when it is not given: the towers for lite0-minilm,
    a well-known tag for OpenCLIP architectures, random weights where no tag exists."""
    if name == OFFLINE_MODEL:
        return None
    tags = open_clip.list_pretrained_tags_by_model(name)
    return next((t for t in _PREFERRED_TAGS if t in tags), tags[0] if tags else None)


def _resolve_pretrained(name: str, pretrained: str | None) -> str | None:
    if pretrained is None:
        pretrained = default_pretrained(name)
    if pretrained in (None, RANDOM_WEIGHTS):
        return None
    if os.path.isfile(pretrained):
        return pretrained
    if name != OFFLINE_MODEL and open_clip.get_pretrained_cfg(name, pretrained):
        return pretrained
    if os.sep in pretrained or pretrained.endswith(_CHECKPOINT_SUFFIXES):
        raise FileNotFoundError(f"--pretrained {pretrained}: checkpoint file not found")
    tags = open_clip.list_pretrained_tags_by_model(name) if name != OFFLINE_MODEL else []
    known = ", ".join(tags) if tags else "none (give a checkpoint file, or no --pretrained)"
    raise ModelLoadError(f"--pretrained {pretrained!r} is neither a file nor a known tag for {name}. Tags: {known}")


def _create(name: str, pretrained: str | None, device):
    """The model with its image stages added before a checkpoint file is loaded (the checkpoint
    holds the stages' projection); OpenCLIP tags are loaded first (they have no stages)."""
    without_clipft_section(name)
    stages, colour_bins = image_stages(name)
    checkpoint = pretrained if pretrained and os.path.isfile(pretrained) else None
    if name == OFFLINE_MODEL:
        model, tokenizer = create_lite0_minilm(checkpoint is not None, device=device)
    else:
        tag = None if checkpoint else pretrained
        model, tokenizer = open_clip.create_model(name, pretrained=tag, device=device), open_clip.get_tokenizer(name)
    if stages:
        add_stages(model, stages, colour_bins)
    buckets = title_words(name)
    if buckets:
        add_title_words(model, tokenizer, buckets)
    if checkpoint:
        _load_checkpoint(model, checkpoint)
    return model, tokenizer


def _load_checkpoint(model, checkpoint: str) -> None:
    """OpenCLIP's loading, strict but for a bag of title words that the checkpoint predates."""
    check_loaded(open_clip.load_checkpoint(model, checkpoint, strict=False))


def load_model(
    name: str,
    pretrained: str | None = None,
    device: str | torch.device = "cpu",
):
    """Return ``(model, preprocess, tokenizer)`` for any OpenCLIP architecture or ``lite0-minilm``.

    ``pretrained`` is an OpenCLIP tag (downloaded by OpenCLIP), a checkpoint file (OpenCLIP or
    clipft), ``"random"`` for random weights, or ``None`` for :func:`default_pretrained`.
    """
    if name not in list_models():
        raise ModelLoadError(f"--model {name!r} is not a known architecture; see `clipft models`")
    pretrained = _resolve_pretrained(name, pretrained)
    try:
        model, tokenizer = _create(name, pretrained, device)
    except (RuntimeError, ValueError, KeyError, AttributeError, EOFError, pickle.UnpicklingError) as err:
        if pretrained and os.path.isfile(pretrained):
            stages, colour_bins = image_stages(name)
            histogram = f" and the {colour_bins}-bin colour histogram" if colour_bins else ""
            hint = (f"; its image projection does not read the {stages} pooled trunk stages{histogram} of "
                    f"{name}, so it predates these multi-scale features: align again with `clipft align`"
                    ) if stages and "size mismatch for visual.head.proj.weight" in str(err) else ""
            raise ModelLoadError(f"--pretrained {pretrained}: not a checkpoint of {name} "
                                 f"({type(err).__name__}: {str(err).splitlines()[0][:200]}){hint}") from err
        if pretrained:
            raise ModelLoadError(
                f"Could not download the OpenCLIP weights {name}/{pretrained}: {err}. "
                f"Without internet access use the offline model (--model {OFFLINE_MODEL}) "
                f"or a local checkpoint (--pretrained path/to/checkpoint.pt)."
            ) from err
        raise
    bad = next((name for name, tensor in model.state_dict().items()
                if tensor.is_floating_point() and not torch.isfinite(tensor).all()), None)
    if bad is not None:
        raise ModelLoadError(f"--pretrained {pretrained}: weight {bad} is not finite (NaN or inf); "
                             f"this checkpoint comes from a diverged run")
    model.eval()
    # Channels-last halves EfficientNet's time on CPU and costs the ViTs nothing.
    model.visual.to(memory_format=torch.channels_last)
    preprocess = image_transform_v2(PreprocessCfg(**open_clip.get_model_preprocess_cfg(model)), is_train=False)
    return model, preprocess, tokenizer


def train_preprocess(model):
    """OpenCLIP's training transform for this model (random resized crop and friends)."""
    return image_transform_v2(PreprocessCfg(**open_clip.get_model_preprocess_cfg(model)), is_train=True)


def resolve_device(device: str) -> str:
    """'auto' means the GPU when there is one."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def weights_fingerprint(state_dict: dict) -> str:
    """Hash of a set of named tensors: their names, dtypes, shapes and values."""
    digest = hashlib.blake2b(digest_size=16)
    for key, tensor in sorted(state_dict.items()):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def tower_fingerprint(model: torch.nn.Module, tower: str) -> str:
    """Hash of the weights that produce one tower's embeddings ('image' or 'text').

    Keyed on the weights themselves, not on names, so that a fine-tuned text tower keeps the
    image cache of its frozen image tower, and two random inits never share a cache.
    """
    if tower not in ("image", "text"):
        raise ValueError(f"tower must be 'image' or 'text', got {tower!r}")
    tensors = {k: v for k, v in model.state_dict().items() if k.startswith("visual.") == (tower == "image")}
    # Hashed once per process while the weights stay as they are: each tensor's storage and
    # in-place version counter (which every optimiser step and load_state_dict bumps) say so.
    state = tuple((k, v.data_ptr(), v._version, v.dtype, tuple(v.shape)) for k, v in tensors.items())
    known = _FINGERPRINTS.get((id(model), tower))
    if known is not None and known[0]() is model and known[1] == state:
        return known[2]
    fingerprint = weights_fingerprint(tensors)
    _FINGERPRINTS[(id(model), tower)] = (weakref.ref(model), state, fingerprint)
    return fingerprint


_FINGERPRINTS: dict = {}  # (id(model), tower) -> (weak reference to the model, weights' state, fingerprint)
