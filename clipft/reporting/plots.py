"""Figures. Plotting never touches a model: it draws labels and results that already exist."""
from __future__ import annotations

import os

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import ConfusionMatrixDisplay

from ..fileio import atomic_write
from ..metrics import label_codes


def subplots(*args, **kwargs):
    """A figure that draws to files only: ``matplotlib.figure.Figure`` needs no pyplot and no
    backend, so importing clipft never changes the user's matplotlib set-up."""
    fig = Figure(figsize=kwargs.pop("figsize", None))
    return fig, fig.subplots(*args, **kwargs)


def save_figure(fig, path: str | os.PathLike) -> None:
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120, bbox_inches="tight")


def plot_confusion_matrix(y_true, y_pred, title: str, path: str | os.PathLike) -> None:
    """Row-normalised confusion matrix (each row: where the photos of one true class went)."""
    y_true, y_pred, labels = label_codes(y_true, y_pred)
    side = max(4.0, 0.45 * len(labels) + 2)
    fig, ax = subplots(figsize=(side, side))
    ConfusionMatrixDisplay.from_predictions(
        y_true, y_pred, labels=np.arange(len(labels)), display_labels=labels, normalize="true", values_format=".2f",
        include_values=len(labels) <= 20, cmap="Blues", colorbar=False, ax=ax, xticks_rotation=90,
    )
    ax.set_title(f"{title} (n={len(y_true)}, rows normalised)")
    save_figure(fig, path)


def plot_risk_coverage(curves: dict, path: str | os.PathLike) -> None:
    """Accuracy of the auto-labelled part against coverage, per attribute (``curves``: attribute
    -> (confidence, correct, auto) per product), with each attribute's operating point."""
    from ..calibration import risk_coverage

    fig, ax = subplots(figsize=(6.5, 4.5))
    for name, (confidence, correct, auto) in curves.items():
        coverage, accuracy = risk_coverage(confidence, correct)
        line, = ax.plot(coverage, accuracy, label=name)
        if auto.any():
            ax.plot([auto.mean()], [correct[auto].mean()], "o", color=line.get_color())
    ax.set(xlabel="coverage (share of products auto-labelled)", ylabel="accuracy of the auto-labelled part",
           title="Risk-coverage (dots: the chosen thresholds)", ylim=(0, 1.01), xlim=(0, 1))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def plot_training_curves(history, path: str | os.PathLike) -> None:
    """Loss per epoch (train and validation) and the validation metrics, from metrics.csv rows."""
    fig, (left, right) = subplots(1, 2, figsize=(11, 4))
    if len(history):
        left.plot(history["epoch"], history["train_loss"], marker="o", label="train loss")
        left.plot(history["epoch"], history["val_loss"], marker="o", label="validation loss")
        best = history.loc[history["val_loss"].idxmin()]
        left.axvline(best["epoch"], color="grey", linestyle=":", label=f"best epoch ({int(best['epoch'])})")
        for column in history.columns:
            if column.startswith("val_") and column.endswith(("_accuracy", "_macro_f1")):
                right.plot(history["epoch"], history[column], marker=".", label=column[4:])
    left.set(xlabel="epoch", ylabel="loss", title="Loss")
    right.set(xlabel="epoch", ylabel="score", title="Validation", ylim=(0, 1))
    for ax in (left, right):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    save_figure(fig, path)


def plot_comparison(table, path: str | os.PathLike, title: str, metric: str = "accuracy") -> None:
    """Grouped bars: one group per attribute, one bar per model (rows of a comparison table)."""
    pivot = table.pivot_table(index="attribute", columns="model", values=metric, sort=False)
    pivot = pivot.reindex(columns=list(dict.fromkeys(table["model"])))  # models in the table order
    fig, ax = subplots(figsize=(max(6.0, 1.8 * len(pivot)) + 2.5, 4))
    pivot.plot.bar(ax=ax, rot=0, width=0.8)
    ax.set(ylabel=metric, ylim=(0, 1), title=title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, bbox_to_anchor=(1.01, 1), loc="upper left")
    save_figure(fig, path)


def plot_learning_curve(curve, attribute: str, path: str | os.PathLike) -> None:
    """Accuracy and macro-F1 against labelled training photos (log axis): per method the mean
    over seeds with a band from the lowest to the highest seed, and flat lines for the methods
    that use no labels (zero-shot, the catalogue prior, majority class). ``curve``: rows of learning_curve's CSV."""
    trained = curve[curve["n_train"] > 0]
    flat = curve[curve["n_train"] == 0]
    fig, axes = subplots(1, 2, figsize=(11, 4.2))
    for ax, metric in zip(axes, ("accuracy", "macro_f1")):
        for method, group in trained.groupby("method", sort=False):
            stats = group.groupby("size", sort=False).agg(n=("n_train", "mean"), mean=(metric, "mean"),
                                                          low=(metric, "min"), high=(metric, "max")).sort_values("n")
            line, = ax.plot(stats["n"], stats["mean"], marker="o", label=method)
            ax.fill_between(stats["n"], stats["low"], stats["high"], color=line.get_color(), alpha=0.2)
        for (method, value), style in zip(flat.groupby("method", sort=False)[metric].mean().items(), ("--", "-.", ":")):
            ax.axhline(value, color="grey", linestyle=style, label=method)
        ax.set_xscale("log")
        ax.set_xlabel("labelled training photos")
        ax.set_ylabel(f"test {metric.replace('_', '-')}")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{attribute}: mean over seeds, band from worst to best seed")
    save_figure(fig, path)


def plot_contact_sheet(paths, captions, title: str, path: str | os.PathLike, columns: int = 6) -> None:
    """Thumbnails of photos with a caption under each (e.g. the top label suspects)."""
    from PIL import Image

    n = max(len(paths), 1)
    rows = -(-n // columns)
    fig, axes = subplots(rows, columns, figsize=(2.2 * columns, 2.6 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image_path, caption in zip(axes.ravel(), paths, captions):
        with Image.open(image_path) as img:
            img.thumbnail((160, 160))
            ax.imshow(img.convert("RGB"))
        ax.set_title(caption, fontsize=7)
    fig.suptitle(title)
    save_figure(fig, path)
