import os
import socket
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


def free_port() -> int:
    """A loopback port nobody listens on now (for the servers a test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(args, expect=0):
    """``clipft ARGS`` in-process; asserts its exit code and returns the click result."""
    from click.testing import CliRunner

    from clipft.cli import cli

    result = CliRunner().invoke(cli, args)
    assert result.exit_code == expect, result.output + repr(result.exception)
    return result


def tiny_finetune(data, out, cache, prompts="[color, lid]", *overrides):
    """A two-epoch photo-only fine-tuning run of the tiny model: a labeller to test with."""
    settings = [f"data={data}", f"prompts={prompts}", "model=clipft-tiny", "epochs=2", "batch_size=8",
                f"cache_dir={cache}", "wise_alphas=[1.0]", "inputs=image", *overrides]
    run(["finetune", *[a for s in settings for a in ("--set", s)], "--out", str(out), "--quiet"])
    return out


def tiny_run(folder, n: int, seed: int):
    """A generated catalogue and a tiny fine-tuning run on it: (catalogue, run folder, cache)."""
    from clipft.commands.sample_data import make_catalogue

    data = make_catalogue(folder / "cat", n=n, size=32, seed=seed)
    return data, tiny_finetune(data, folder / "run", folder / "cache"), folder / "cache"


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
