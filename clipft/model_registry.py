"""clipft's architectures in OpenCLIP's model registry: the JSON configs of ``model_configs/``,
added when a model is first asked for, and kept apart from the keys only clipft reads. Both the
model factory (:mod:`clipft.models`) and the offline model (:mod:`clipft.offline_model`) use it."""
from __future__ import annotations

import functools
import json
from pathlib import Path

import open_clip

CONFIG_DIR = Path(__file__).parent / "model_configs"


@functools.cache
def register_model_configs() -> None:
    """Add clipft's architectures to OpenCLIP's registry, once, when a model is first asked for
    (not on import: importing clipft changes nothing in OpenCLIP)."""
    open_clip.add_model_config(CONFIG_DIR)


def without_clipft_section(name: str) -> None:
    # OpenCLIP passes every key of a config to the model's constructor; clipft's own section
    # is read by image_stages() and must not reach it (a rescan of the folder brings it back).
    open_clip.factory._MODEL_CONFIGS.get(name, {}).pop("clipft", None)


def clipft_section(name: str) -> dict:
    """The ``"clipft"`` section of an architecture of clipft's JSON config; {} for OpenCLIP's own."""
    path = CONFIG_DIR / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8")).get("clipft", {}) if path.is_file() else {}


def image_stages(name: str) -> tuple[int, int]:
    """(how many image-tower stages an architecture of clipft's projects beside its last, the
    bins per channel of its colour histogram): ``"clipft": {"image_stages": N, "colour_bins": B}``
    in its JSON config; (0, 0) for OpenCLIP's own."""
    section = clipft_section(name)
    return int(section.get("image_stages", 0)), int(section.get("colour_bins", 0))


def title_words(name: str) -> int:
    """The hashed word-pair buckets of an architecture's bag of title words
    (``"clipft": {"title_words": N}``, :mod:`clipft.title_words`); 0 for none."""
    return int(clipft_section(name).get("title_words", 0))
