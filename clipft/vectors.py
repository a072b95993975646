"""Vector helpers shared by the library's layers (zero-shot scoring, near-duplicate splits);
they import nothing of clipft, so any module may use them."""
from __future__ import annotations

import numpy as np


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero)."""
    return x / np.linalg.norm(x, axis=-1, keepdims=True).clip(min=1e-12)
