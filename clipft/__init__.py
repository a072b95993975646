"""clipft: label product photos with their attributes using CLIP.

The library is this package's top level (models, prompts, catalogues, zero-shot scoring,
fusion, probes, losses, metrics), with the embedding cache in :mod:`clipft.cache` and the
trainer in :mod:`clipft.training`; :mod:`clipft.commands` turns configs into run folders and
:mod:`clipft.reporting` writes their tables and plots.
"""
from .cache.encoding import encode_catalogue, encode_images, encode_texts
from .catalogue import Catalogue, CatalogueError, load_catalogue
from .fusion import ProductFeatures
from .metrics import check_labels, classification_metrics
from .models import ModelLoadError, list_models, load_model, tower_fingerprint
from .offline_model import OFFLINE_MODEL
from .prompts import PromptFileError, PromptSpec, load_prompt_spec, load_prompt_specs
from .zeroshot import ZeroShotClassifier, zeroshot_catalogue

__all__ = [
    "Catalogue", "CatalogueError", "load_catalogue", "encode_catalogue", "encode_images", "encode_texts",
    "ProductFeatures", "check_labels", "classification_metrics", "ModelLoadError", "list_models", "load_model",
    "tower_fingerprint", "OFFLINE_MODEL", "PromptFileError", "PromptSpec", "load_prompt_spec", "load_prompt_specs",
    "ZeroShotClassifier", "zeroshot_catalogue",
]
