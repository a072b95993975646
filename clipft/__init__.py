"""clipft: label product photos with their attributes using CLIP."""
from .data import Catalogue, CatalogueError, load_catalogue
from .embeddings import encode_images, encode_texts
from .metrics import check_labels, classification_metrics
from .models import ModelLoadError, list_models, load_model, tower_fingerprint
from .offline_model import OFFLINE_MODEL
from .prompts import PromptFileError, PromptSpec, load_prompt_spec, load_prompt_specs
from .scoring import zeroshot_catalogue
from .zeroshot import ZeroShotClassifier

__all__ = [
    "Catalogue", "CatalogueError", "load_catalogue", "encode_images", "encode_texts", "check_labels",
    "classification_metrics", "ModelLoadError", "list_models", "load_model", "tower_fingerprint",
    "OFFLINE_MODEL", "PromptFileError", "PromptSpec", "load_prompt_spec", "load_prompt_specs",
    "zeroshot_catalogue", "ZeroShotClassifier",
]
