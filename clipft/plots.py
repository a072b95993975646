"""Figures. Plotting never touches a model: it draws labels and results that already exist."""
from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")  # files only: clipft runs on servers without a display
import matplotlib.pyplot as plt  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay  # noqa: E402

from .fileio import atomic_write  # noqa: E402
from .metrics import metric_labels  # noqa: E402


def save_figure(fig, path: str | os.PathLike) -> None:
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def plot_confusion_matrix(y_true, y_pred, title: str, path: str | os.PathLike) -> None:
    """Row-normalised confusion matrix (each row: where the photos of one true class went)."""
    labels = metric_labels(y_true, y_pred)
    side = max(4.0, 0.45 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(side, side))
    ConfusionMatrixDisplay.from_predictions(
        y_true, y_pred, labels=labels, normalize="true", values_format=".2f",
        include_values=len(labels) <= 20, cmap="Blues", colorbar=False, ax=ax, xticks_rotation=90,
    )
    ax.set_title(f"{title} (n={len(y_true)}, rows normalised)")
    save_figure(fig, path)
