import os
import tempfile
from pathlib import Path

import pytest
import torch

# Tests never touch the network or a GPU, and never use the user's cache.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("CLIPFT_CACHE", tempfile.mkdtemp(prefix="clipft-test-cache-"))

FASHION = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fashion"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_model():
    from clipft.models import TINY_MODEL, load_model

    torch.manual_seed(0)
    return load_model(TINY_MODEL)


@pytest.fixture(scope="session")
def sample_catalogue(tmp_path_factory):
    """12 generated products (t-shirts, mugs, pans) with 32x32 photos."""
    from clipft.commands.sample_data import make_catalogue

    return make_catalogue(tmp_path_factory.mktemp("sample"), n=12, size=32, seed=0)


@pytest.fixture
def fashion_dir():
    if not (FASHION / "styles.csv").is_file():
        pytest.skip(f"fashion catalogue not found at {FASHION}")
    return FASHION
