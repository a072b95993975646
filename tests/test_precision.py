"""Encoding precisions: fp32, autocast (bf16 on CPU) and int8 dynamic quantisation."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from clipft.cache.encoding import encode_images, encode_texts
from clipft.precision import PrecisionError, encoding_precision, resolve_precision
from conftest import run


class Calls(list):
    """A record that a deep copy of the model (the int8 encoder) still writes to."""

    def __deepcopy__(self, memo):
        return self


class Spy(torch.nn.Module):
    """Records, at each encode call, whether autocast was on and whether Linear layers were int8."""

    def __init__(self, model):
        super().__init__()
        self.inner, self.visual = model, model.visual
        self.calls = Calls()

    def _record(self):
        quantised = any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in self.modules())
        self.calls.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"), quantised))

    def encode_image(self, x):
        self._record()
        return self.inner.encode_image(x)

    def encode_text(self, tokens):
        self._record()
        return self.inner.encode_text(tokens)


def photos(tmp_path, n=6):
    paths = []
    for i in range(n):
        paths.append(tmp_path / f"{i}.png")
        Image.new("RGB", (32, 32), (i * 40 % 255, 90, 160)).save(paths[-1])
    return paths


def cosine(a, b):
    a, b = a / np.linalg.norm(a, axis=1, keepdims=True), b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


@pytest.mark.parametrize("precision,autocast,quantised", [
    ("fp32", False, False), ("amp_bf16", True, False), ("amp", True, False), ("int8", False, True)])
def test_each_precision_encodes_as_it_says_and_close_to_fp32(tmp_path, tiny_model, precision, autocast, quantised):
    model, preprocess, tokenizer = tiny_model
    paths = photos(tmp_path)
    exact = encode_images(model, preprocess, paths, tmp_path / "cache", progress=False).embeddings
    spy = Spy(model)
    with encoding_precision(precision):
        reduced = encode_images(spy, preprocess, paths, tmp_path / "cache", progress=False)
        texts = encode_texts(spy, tokenizer, ["red mug", "blue pan"], tmp_path / "cache")
    assert {call[0] for call in spy.calls} == {autocast} and {call[2] for call in spy.calls} == {quantised}
    if autocast:
        assert {call[1] for call in spy.calls} == {torch.bfloat16}  # a CPU autocasts to bfloat16
    # each precision has a cache of its own: fp32 embeddings are never served as reduced ones
    assert reduced.encoded == (0 if precision == "fp32" else len(paths))
    assert reduced.embeddings.dtype == np.float32 and texts.dtype == np.float32
    assert cosine(exact, reduced.embeddings).min() > 0.98
    exact_texts = encode_texts(model, tokenizer, ["red mug", "blue pan"], tmp_path / "cache")
    assert cosine(exact_texts, texts).min() > 0.98


def test_defaults_and_impossible_combinations():
    assert resolve_precision(None, "cpu") == "fp32" and resolve_precision(None, "cuda:0") == "amp"
    with pytest.raises(PrecisionError, match="int8 runs on the CPU only"):
        resolve_precision("int8", "cuda")
    with pytest.raises(PrecisionError, match="not one of"):
        with encoding_precision("fp8"):
            pass


def test_commands_take_a_precision_and_record_it(tmp_path, sample_catalogue):
    out = tmp_path / "zs"
    run(["zeroshot", "--prompts", "color", "--data", str(sample_catalogue), "--model", "clipft-tiny", "--out", str(out),
         "--cache-dir", str(tmp_path / "cache"), "--precision", "amp_bf16"])
    assert json.loads((out / "metrics.json").read_text())["run"]["precision"] == "amp_bf16"
    result = run(["finetune", "--set", f"data={sample_catalogue}", "--set", "prompts=[color]", "--set", "precision=fp16",
                  "--set", "model=clipft-tiny", "--out", str(tmp_path / "ft"), "--quiet"], expect=1)
    assert "precision: 'fp16' is not one of fp32, amp, amp_bf16, int8" in result.output
