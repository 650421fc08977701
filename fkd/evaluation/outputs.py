"""The evaluate stage's files: ``metrics_dir/<variant>.json`` and, under ``plots_dir``, the per-keypoint
tables, the face grids and the error histogram."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fkd.core.config import EvaluateParams
from fkd.core.data import Part
from fkd.core.io import atomic_path, save_json, staged_dir
from fkd.core.keypoints import complete_mask, from_extended
from fkd.evaluation import plots
from fkd.evaluation.evaluate import MEAN_SHAPE, VariantResult
from fkd.models.registry import MODEL_NAMES

#: Variants drawn on face grids and shown in the per-keypoint chart (TTA twins and the baseline are in the files).
MODEL_VARIANTS: tuple[str, ...] = (*MODEL_NAMES, "ensemble")


def pick_grid_faces(errors: np.ndarray, n_faces: int, n_worst: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of ``n_faces`` faces to draw: the ``n_worst`` worst, and the rest spread evenly over the
    error ranking of the others (from the best to the typical). Returns (typical, worst)."""
    order = np.argsort(-np.nan_to_num(errors, nan=-1.0), kind="stable")  # worst first
    n_faces = min(n_faces, len(errors))
    n_worst = min(n_worst, n_faces)
    worst, rest = order[:n_worst], order[n_worst:][::-1]  # rest: best first
    n_typical = n_faces - n_worst
    typical = rest[np.linspace(0, len(rest) - 1, n_typical).round().astype(int)] if n_typical and len(rest) else rest[:0]
    return typical, worst


def write_per_keypoint_csv(path: Path, rows: list[dict]) -> None:
    with atomic_path(path) as tmp:
        lines = ["keypoint,rmse,mean_error,labelled"]
        lines += [f"{r['keypoint']},{r['rmse']:.4f},{r['mean_error']:.4f},{r['labelled']}" for r in rows]
        tmp.write_text("\n".join(lines) + "\n")


def _rounded(metrics: dict) -> dict:
    return {k: (None if v is None else round(v, 5)) for k, v in metrics.items()}


def write_outputs(results: dict[str, VariantResult], val: Part, p: EvaluateParams, metrics_dir: str | Path, plots_dir: str | Path) -> None:
    """Write ``metrics_dir/<variant>.json`` and, under ``plots_dir``, ``per_keypoint/<variant>.csv``,
    ``faces/<model>.png`` (validation faces, true vs predicted) and ``error_histogram.png``.

    The metrics were checked when they were scored (:func:`fkd.evaluation.evaluate.evaluate_predictions`).
    Each folder is built aside and swapped in whole (:func:`fkd.core.io.staged_dir`), so no stale variant survives a re-run.
    """
    metrics_dir, plots_dir = Path(metrics_dir), Path(plots_dir)
    with staged_dir(metrics_dir) as staged_metrics, staged_dir(plots_dir) as staged_plots:
        for name, result in results.items():
            save_json(staged_metrics / f"{name}.json", _rounded(result.metrics))
            write_per_keypoint_csv(staged_plots / "per_keypoint" / f"{name}.csv", result.per_keypoint)
        scheme_b = ~complete_mask(val.keypoints)
        for name in MODEL_VARIANTS:
            if name not in results:
                continue
            result = results[name]
            typical, worst = pick_grid_faces(result.image_errors, p.grid_faces, p.worst_faces)
            faces = np.concatenate([typical, worst])
            plots.face_grid(
                staged_plots / "faces" / f"{name}.png",
                val.images[faces],
                val.keypoints[faces],
                from_extended(result.predictions[faces], scheme_b[faces]),
                [f"val row {val.rows[i]}: {result.image_errors[i]:.1f} px" for i in faces],
                worst=np.arange(len(faces)) >= len(typical),
                title=f"{name}: validation faces (true o, predicted x); last {len(worst)} are the worst",
            )
        shown = [n for n in (*MODEL_VARIANTS, "ensemble_tta", MEAN_SHAPE) if n in results]
        plots.error_histogram(staged_plots / "error_histogram.png", {n: results[n].image_errors for n in shown})
