"""Vector helpers shared by the library's layers (zero-shot scoring, near-duplicate splits,
label columns); they import nothing of clipft, so any module may use them."""
from __future__ import annotations

import numpy as np
import pandas as pd


def blank_cells(values) -> np.ndarray:
    """Per value, whether it is missing: empty, only spaces, None or NaN (a catalogue's blank cell)."""
    text = pd.Series(list(values), dtype=object)
    return (text.isna() | (text.astype(str).str.strip() == "")).to_numpy()


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero)."""
    return x / np.linalg.norm(x, axis=-1, keepdims=True).clip(min=1e-12)
