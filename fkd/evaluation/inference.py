"""One prediction interface over every model: test-time augmentation (flip, turns, scales) and the ensemble.

A *model function* takes uint8 images (N, 96, 96) and returns keypoints (N, 34) in pixels in
the extended layout of :mod:`fkd.core.keypoints` (15 scheme-A points, then scheme-B nose tip and
bottom lip). :mod:`fkd.models.registry` says which file and loader builds each model's function.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fkd.core.errors import ModelFileError
from fkd.core.keypoints import EXTENDED_NAMES, flip_coords
from fkd.models.registry import ENSEMBLE_FILE, MODELS, ModelFn, check_model_names


def flip_average(direct: np.ndarray, mirrored: np.ndarray, width: int = 96) -> np.ndarray:
    """Flip test-time augmentation on arrays: the mean of the predictions on the images and the
    swapped-back predictions on their mirrors (both (N, 34))."""
    return (direct + flip_coords(mirrored, width=width, names=EXTENDED_NAMES)) / 2


#: A test-time transform: (scale, degrees) about the face's centre; (1.0, 0.0) is the face as it is.
Transform = tuple[float, float]


def transforms_of(p) -> list[Transform]:
    """The extra test-time transforms of params section ``tta``: each turn, then each scale, one at a time."""
    return [(1.0, float(d)) for d in p.turns_deg] + [(float(s), 0.0) for s in p.scales]


def _inverse(transform: Transform, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(A, b) with p = A q + b: the source pixel p (x, y) of pixel q of the face under ``transform``."""
    scale, degrees = transform
    t = np.deg2rad(degrees)
    a = np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]]) / scale  # the inverse of scale * R(t)
    centre = np.full(2, (size - 1) / 2)
    return a, centre - a @ centre


def warp_faces(images: np.ndarray, transform: Transform) -> np.ndarray:
    """uint8 faces (N, H, W) scaled and turned (clockwise on screen for positive degrees) about their centre; edges extended."""
    from scipy.ndimage import affine_transform

    a, b = _inverse(transform, images.shape[2])
    swap = np.array([[0, 1], [1, 0]])  # (x, y) <-> (row, col)
    matrix = np.eye(3)
    matrix[1:, 1:] = swap @ a @ swap
    out = affine_transform(images.astype(np.float32), matrix, offset=np.r_[0.0, swap @ b], order=1, mode="nearest")
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def unwarp_points(points: np.ndarray, transform: Transform, size: int = 96) -> np.ndarray:
    """Keypoints (N, 2K) predicted on :func:`warp_faces` output, back in the original faces' pixels."""
    a, b = _inverse(transform, size)
    pts = np.asarray(points, dtype=np.float64).reshape(len(points), -1, 2)
    return (pts @ a.T + b).reshape(len(points), -1)


def tta_average(model_fn: ModelFn, images: np.ndarray, transforms: list[Transform] = (), direct: np.ndarray | None = None) -> np.ndarray:
    """Test-time augmentation: the mean over the face as it is and under each of ``transforms`` of the mean of
    the prediction and the swapped-back prediction on the mirror, each mapped back. ``direct``: model_fn(images), if known."""
    def flipped(faces: np.ndarray, first: np.ndarray | None = None) -> np.ndarray:
        first = np.asarray(model_fn(faces), dtype=np.float64) if first is None else first
        mirrored = np.asarray(model_fn(np.ascontiguousarray(faces[:, :, ::-1])), dtype=np.float64)
        return flip_average(first, mirrored, faces.shape[2])

    averaged = [flipped(images, direct)]
    averaged += [unwarp_points(flipped(warp_faces(images, t)), t, images.shape[2]) for t in transforms]
    return averaged[0] if len(averaged) == 1 else np.mean(averaged, axis=0)


def with_tta(model_fn: ModelFn, transforms: list[Transform] = ()) -> ModelFn:
    """``model_fn`` with :func:`tta_average`: flip, plus ``transforms`` (:func:`transforms_of` params ``tta``)."""
    return lambda images: tta_average(model_fn, images, transforms)


def ensemble(model_fns: list[ModelFn], weights) -> ModelFn:
    """Weighted mean of several model functions: ``weights`` (M,) per model or (M, 17) per keypoint
    (see :func:`fkd.evaluation.ensemble.combine`)."""
    from fkd.evaluation.ensemble import combine

    w = np.asarray(weights, dtype=np.float64)

    def predict(images: np.ndarray) -> np.ndarray:
        return combine([fn(images) for fn in model_fns], w)

    return predict


def ensemble_weights(p, models_dir: str | Path = "models") -> np.ndarray:
    """The ensemble's weights for params ``p`` (``ensemble``): fitted ones from ``models_dir``, or the
    fixed ones of params, normalised to sum to 1."""
    check_model_names(p.members, "ensemble.members")
    if p.weights == "fitted":
        from fkd.evaluation.ensemble import load_weights

        path = Path(models_dir) / ENSEMBLE_FILE
        if not path.exists():
            raise ModelFileError(f"{path} not found: the evaluate stage fits it (run `dvc repro`, or `dvc pull`), "
                                    "or set fixed ensemble.weights in params.yaml")
        return load_weights(path, expected_members=list(p.members))[1]
    w = np.asarray(p.weights, dtype=np.float64)
    return w / w.sum()


def load_model_fn(kind: str, models_dir: str | Path = "models", fold: int = 0) -> ModelFn:
    """The model function of fold ``fold``'s model ``kind`` (a :data:`fkd.models.registry.MODELS` name) in ``models_dir``.

    Raises :class:`fkd.core.errors.ModelFileError` when the file is not there, or is there but cannot be loaded (the
    loader's exception chained).
    """
    check_model_names(kind, "model")
    path = Path(models_dir) / MODELS[kind].file(fold)
    if not path.exists():
        raise ModelFileError(f"{path} not found: run `dvc repro` (or `dvc pull`) to get the trained {kind} model "
                             f"of fold {fold} (the folds are params split.folds)")
    try:
        return MODELS[kind].load(path)
    except ModelFileError:
        raise  # the loader's own one line already names the file and what to do
    except Exception as exc:  # any loader, any format: truncated, damaged or not a model at all
        why = (str(exc).strip().splitlines() or [""])[0][:200] or type(exc).__name__
        raise ModelFileError(f"{path}: cannot load the {kind} model ({why}); "
                             f"rebuild it with `dvc repro` (or fetch it with `dvc pull`)") from exc


def fold_average(fold_fns: list[ModelFn]) -> ModelFn:
    """The mean prediction of the fold models (the one model itself when there is one fold)."""
    if len(fold_fns) == 1:
        return fold_fns[0]

    def predict(images: np.ndarray) -> np.ndarray:
        return np.mean([np.asarray(fn(images), dtype=np.float64) for fn in fold_fns], axis=0)

    return predict


def load_predictor(kind: str, models_dir: str | Path, ensemble_params, tta_flip: bool = True, folds=(0,),
                   transforms: list[Transform] = ()) -> ModelFn:
    """Model function for one model or ``ensemble`` (members and weights from params ``ensemble``), each
    model the average of its ``folds``' models, with optional TTA (:func:`with_tta`: flip, plus ``transforms``)."""
    check_model_names(kind, "submit.model", extra=("ensemble",))

    def averaged(k: str) -> ModelFn:
        fn = fold_average([load_model_fn(k, models_dir, fold) for fold in folds])
        return with_tta(fn, transforms) if tta_flip else fn

    if kind == "ensemble":
        weights = ensemble_weights(ensemble_params, models_dir)
        return ensemble([averaged(k) for k in ensemble_params.members], weights)
    return averaged(kind)


def check_fold_models(models_dir: str | Path, folds) -> None:
    """Raise :class:`ModelFileError` when a model folder holds a file that is no fold's model of ``folds``.

    ``evaluate`` and ``submit`` depend on the whole model folders, so DVC hashes every file in them into
    ``dvc.lock``: a model of a fold that ``split.folds`` no longer trains is no stage's output, never
    pushed, and a fresh clone would pull folders that disagree with ``dvc.lock``.
    """
    models_dir = Path(models_dir)
    expected = {MODELS[kind].file(fold) for kind in MODELS for fold in folds}
    stale = sorted(path for spec in MODELS.values() if (models_dir / spec.folder).is_dir()
                   for path in (models_dir / spec.folder).iterdir()
                   if path.name != ".gitignore" and path.relative_to(models_dir).as_posix() not in expected)
    if stale:
        raise ModelFileError(f"{stale[0]}: no stage of split.folds {list(folds)} writes this file, yet DVC would hash it into "
                             f"dvc.lock with its folder (a fresh clone would not have it); delete what no stage writes: "
                             f"rm -r {' '.join(map(str, stale))}")
