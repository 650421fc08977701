"""Evaluation figures as PNG files: validation faces with true and predicted keypoints, and error histograms.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot, no global backend switch) and
written through a temporary file, so a stage never leaves half a PNG.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from fkd.core.io import atomic_path

GRID_COLUMNS = 4
TRUE_STYLE = dict(marker="o", s=22, facecolors="none", edgecolors="lime", linewidths=1.2)
PRED_STYLE = dict(marker="x", s=22, c="red", linewidths=1.2)


def _save(fig: Figure, path: str | Path, dpi: int = 100) -> None:
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)


def face_grid(path: str | Path, images: np.ndarray, true_coords: np.ndarray, pred_coords: np.ndarray,
              captions: list[str], worst: np.ndarray | None = None, title: str = "") -> None:
    """Faces (K, 96, 96) with true (K, 30; NaN = unlabelled) and predicted (K, 30) keypoints in a grid.

    A thin line joins each labelled point to its prediction; ``worst`` (K,) marks captions in red.
    """
    n = len(images)
    cols = min(GRID_COLUMNS, max(n, 1))
    rows = max(int(np.ceil(n / cols)), 1)
    fig = Figure(figsize=(2.4 * cols, 2.6 * rows + (0.4 if title else 0)))
    axes = fig.subplots(rows, cols, squeeze=False)
    worst = np.zeros(n, bool) if worst is None else np.asarray(worst, bool)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i >= n:
            continue
        ax.imshow(images[i], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        true_pts = np.asarray(true_coords[i], float).reshape(-1, 2)
        pred_pts = np.asarray(pred_coords[i], float).reshape(-1, 2)
        labelled = np.isfinite(true_pts).all(axis=1)
        for (tx, ty), (px, py) in zip(true_pts[labelled], pred_pts[labelled]):
            ax.plot([tx, px], [ty, py], color="yellow", linewidth=0.7)
        ax.scatter(true_pts[labelled, 0], true_pts[labelled, 1], **TRUE_STYLE)
        ax.scatter(pred_pts[:, 0], pred_pts[:, 1], **PRED_STYLE)
        ax.set_xlim(-0.5, images.shape[2] - 0.5)
        ax.set_ylim(images.shape[1] - 0.5, -0.5)
        ax.set_title(captions[i], fontsize=8, color="red" if worst[i] else "black")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def error_histogram(path: str | Path, errors: dict[str, np.ndarray], bins: int = 30) -> None:
    """Step histograms of per-face mean keypoint error (pixels), one line per model variant, shared bins."""
    finite = {name: np.asarray(e, float)[np.isfinite(e)] for name, e in errors.items()}
    values = np.concatenate([e for e in finite.values() if e.size] or [np.zeros(1)])
    edges = np.linspace(0.0, max(float(values.max()), 1e-6) * 1.02, bins + 1)
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    for name, e in finite.items():
        ax.hist(e, bins=edges, histtype="step", linewidth=1.5, linestyle="--" if name == "mean_shape" else "-",
                label=f"{name} (median {np.median(e):.2f} px)" if e.size else name)
    ax.set_xlabel("mean keypoint error per validation face (px)")
    ax.set_ylabel("faces")
    ax.set_title("Per-face error on the validation split")
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)
