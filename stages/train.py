"""train: one model (or one phase of it) on fold K of data/split -> its model file(s) + dvclive metrics.

Usage: python -m stages.train MODEL[.PHASE] SPLIT_DIR FOLD METRICS_DIR PATH...

MODEL is a folder of fkd/models/ (its contract: fkd/models/<name>/__init__.py); PATH... are what its trainer
takes after the params: the model file to write (a phase that fine-tunes takes the file it starts from first).
"""
import importlib

from fkd.core.cli import StageError, run_stage
from fkd.core.config import MODEL_NAMES, load_params
from fkd.nn.train_result import run_training


def trainer(model: str):
    """The contract module of model ``name`` in ``name[.phase]`` and its trainer: ``fit``, or that phase's."""
    name, _, phase = model.partition(".")
    if name not in MODEL_NAMES:
        raise StageError(f"train: no model {name!r} in fkd/models/ (there are: {', '.join(MODEL_NAMES)})")
    plugin = importlib.import_module(f"fkd.models.{name}")  # dvc.yaml lists fkd/models/<name> among the deps
    if not phase:
        return name, plugin, plugin.fit
    phases = getattr(plugin, "PHASES", ())
    if phase not in phases:
        raise StageError(f"train: model {name!r} has no phase {phase!r} (it has: {', '.join(phases) or 'none'})")
    return name, plugin, plugin.phase(phase)


def main(argv: list[str]) -> None:
    if len(argv) < 5:
        raise StageError("usage: python -m stages.train MODEL[.PHASE] SPLIT_DIR FOLD METRICS_DIR PATH...")
    model, split_dir, fold, metrics_dir, *paths = argv
    name, plugin, fit = trainer(model)
    if not paths[-1].endswith(plugin.SUFFIX):
        raise StageError(f"train: {paths[-1]}: model {name!r} writes {plugin.SUFFIX} files; give its output path that suffix in dvc.yaml")
    run_training(fit, split_dir, int(fold), metrics_dir, getattr(load_params(name), name), *paths)


if __name__ == "__main__":
    run_stage(main)
