"""Numeric precision of the encoding passes (photos and texts into the embedding cache).

``fp32`` is exact. ``amp_bf16`` runs the towers under ``torch.autocast`` in bfloat16 (CPU or
GPU), ``amp`` under autocast in float16 on a GPU (bfloat16 on a CPU, which has no fast float16),
as OpenCLIP's trainer and CLIP_benchmark do. ``int8`` quantises every ``nn.Linear`` to int8 with
dynamic activation scales (CPU only). Embeddings always come out as float32, and the cache keeps
each precision apart, so a reduced-precision embedding is never served as an exact one.

The precision is a context, like ``torch.autocast``: commands enter it around their encoding
passes only, so training steps are never affected.
"""
from __future__ import annotations

import contextlib
import contextvars
import copy
import warnings
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where it is used: the CLI reads PRECISIONS without it
    import torch

PRECISIONS = ("fp32", "amp", "amp_bf16", "int8")
_CURRENT = contextvars.ContextVar("clipft_precision", default="fp32")


class PrecisionError(ValueError):
    """A precision that cannot run on the chosen device."""


def check_precision(precision: str) -> str:
    """``precision`` when it is one of :data:`PRECISIONS`, else a PrecisionError."""
    if precision not in PRECISIONS:
        raise PrecisionError(f"precision: {precision!r} is not one of {', '.join(PRECISIONS)}")
    return precision


def resolve_precision(precision: str | None, device: str) -> str:
    """None means the usual default: ``amp`` on a GPU, ``fp32`` on a CPU."""
    is_cuda = str(device).startswith("cuda")
    if precision is None:
        return "amp" if is_cuda else "fp32"
    if check_precision(precision) == "int8" and is_cuda:
        raise PrecisionError("precision int8 runs on the CPU only; use amp or amp_bf16 on a GPU")
    return precision


@contextlib.contextmanager
def encoding_precision(precision: str):
    """Encode at ``precision`` inside this block (see the module docstring)."""
    token = _CURRENT.set(check_precision(precision))
    try:
        yield
    finally:
        _CURRENT.reset(token)


def current_precision() -> str:
    return _CURRENT.get()


def cache_tag() -> tuple[str, ...]:
    """What the cache key adds for the current precision (nothing for fp32, so that exact
    caches written before precisions existed stay valid)."""
    precision = current_precision()
    return () if precision == "fp32" else (f"precision={precision}",)


def int8_linear(module: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``module`` whose ``nn.Linear`` layers compute in int8 (dynamic quantisation)."""
    import torch

    with warnings.catch_warnings():
        # PyTorch 2.14 announces a future replacement of quantised tensors; dynamic
        # quantisation still works and is what makes the CPU path fast today.
        warnings.simplefilter("ignore", UserWarning)
        quantised = torch.ao.quantization.quantize_dynamic(copy.deepcopy(module).cpu().eval(), {torch.nn.Linear},
                                                           dtype=torch.qint8)
    for layer in quantised.modules():
        if isinstance(layer, torch.ao.nn.quantized.dynamic.Linear):
            # OpenCLIP's blocks read their compute dtype from a Linear's weight, which is a
            # method here; this is the attribute it reads for int8 layers instead.
            layer.int8_original_dtype = torch.float32
    return quantised


def prepared_encoder(module: torch.nn.Module, device) -> tuple[torch.nn.Module, contextlib.AbstractContextManager]:
    """The module to encode with, and the context to run it in, for the current precision."""
    import torch

    precision = current_precision()
    device_type = torch.device(device).type
    if precision == "int8":
        return int8_linear(module), contextlib.nullcontext()
    if precision in ("amp", "amp_bf16"):
        dtype = torch.float16 if precision == "amp" and device_type == "cuda" else torch.bfloat16
        return module, torch.autocast(device_type, dtype=dtype)
    return module, contextlib.nullcontext()
