"""torchrun with 2 CPU processes (gloo): the same results as one process."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from clipft.cache.encoding import encode_images, image_store
from clipft.commands.sample_data import make_catalogue
from conftest import REPO


def torchrun(*args, cwd=REPO):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "clipft", *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_two_process_training_equals_one_process_with_the_same_global_batch(tmp_path):
    from clipft.training.config import load_config
    from clipft.commands.finetune import run_finetune

    data = make_catalogue(tmp_path / "cat", n=36, size=32, seed=3)
    overrides = [f"data={data}", f"prompts=[{REPO}/prompts/color.yaml, {REPO}/prompts/lid.yaml]", "model=clipft-tiny",
                 "epochs=1", "batch_size=8", "lr=1.0e-3", "warmup_steps=1", "wise_alphas=[1.0]", "device=cpu",
                 "title_dropout=0.5", f"cache_dir={tmp_path / 'cache'}"]
    result = torchrun("finetune", *[a for o in overrides for a in ("--set", o)], "--out", tmp_path / "two", "--quiet")
    assert result.stdout.count("best epoch") == 1  # rank 0 alone reports
    run_finetune(load_config(None, overrides), tmp_path / "one", progress=False)
    one = torch.load(tmp_path / "one" / "last.pt", weights_only=True)["state_dict"]
    two = torch.load(tmp_path / "two" / "last.pt", weights_only=True)["state_dict"]
    best = torch.load(tmp_path / "one" / "best.pt", weights_only=True)["state_dict"]
    for key, value in one.items():
        torch.testing.assert_close(two[key], value, rtol=1e-4, atol=1e-5, msg=key)
    assert torch.equal(best["logit_scale"], one["logit_scale"])  # best = last after one epoch
    assert len(list((tmp_path / "two").glob("*.csv"))) == len(list((tmp_path / "one").glob("*.csv")))


@pytest.mark.slow
def test_sharded_cache_equals_the_unsharded_one(tmp_path):
    data = make_catalogue(tmp_path / "cat", n=20, size=32, seed=4)
    result = torchrun("zeroshot", "--prompts", REPO / "prompts" / "color.yaml", "--data", data, "--image-only",
                      "--model", "clipft-tiny", "--device", "cpu", "--cache-dir", tmp_path / "sharded",
                      "--out", tmp_path / "out")
    assert result.stdout.count("scored 20 of 20") == 1 and "20 images encoded" in result.stdout

    from clipft.catalogue import load_catalogue
    from clipft.models import load_model

    torch.manual_seed(0)  # the seed zeroshot uses: the same random tiny model
    model, preprocess, _ = load_model("clipft-tiny")
    paths = load_catalogue(data).image_paths
    store = image_store(model, preprocess, tmp_path / "sharded")
    assert len(store) == 20 and len(list(store.folder.glob("shard-*.keys.npy"))) == 2  # one shard per rank
    sharded = encode_images(model, preprocess, paths, tmp_path / "sharded", progress=False)
    assert sharded.encoded == 0  # read as one cache
    single = encode_images(model, preprocess, paths, tmp_path / "single", progress=False)
    assert single.encoded == 20
    np.testing.assert_allclose(sharded.embeddings, single.embeddings, rtol=1e-5, atol=1e-6)
