"""clipft: label product photos with their attributes using CLIP.

The library is this package's top level (models, prompts, catalogues, zero-shot scoring,
fusion, probes, losses, metrics), with the embedding cache in :mod:`clipft.cache` and the
trainer in :mod:`clipft.training`; :mod:`clipft.commands` turns configs into run folders and
:mod:`clipft.reporting` writes their tables and plots.
"""
from __future__ import annotations

import importlib

# The public surface, imported on first use (PEP 562) so that ``import clipft`` and
# ``clipft --help`` do not load torch and OpenCLIP.
_PUBLIC = {
    "encode_catalogue": "cache.encoding", "encode_images": "cache.encoding", "encode_texts": "cache.encoding",
    "Catalogue": "catalogue", "CatalogueError": "catalogue", "load_catalogue": "catalogue",
    "ProductFeatures": "fusion", "check_labels": "metrics", "classification_metrics": "metrics",
    "ModelLoadError": "models", "list_models": "models", "load_model": "models", "tower_fingerprint": "models",
    "OFFLINE_MODEL": "offline_model", "PromptFileError": "prompts", "PromptSpec": "prompts",
    "load_prompt_spec": "prompts", "load_prompt_specs": "prompts", "ZeroShotClassifier": "zeroshot",
    "Labeller": "labeller", "EncodeOptions": "scoring", "score_chunks": "scoring",
}
__all__ = list(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'clipft' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
