"""The library's domain errors that the entry points (stages, ``fkd.predict``) turn into one-line
messages and exit code 2. Anything else is a bug and keeps its traceback. Every one derives from
:class:`FkdError` (and keeps its builtin base, so ``except ValueError`` callers still catch it); those
defined next to their code (``StageError``, ``DataError``, ``GateError``, ``ParamsError``, ...) do too."""


class FkdError(Exception):
    """Base of the project's domain errors: a failure the user can act on, printed as one line."""


class TrainingError(FkdError, RuntimeError):
    """Training produced nothing usable (no epoch ran, or no finite validation RMSE)."""


class ModelFileError(FkdError, RuntimeError):
    """A model file (or the ensemble's weights) is missing or cannot be loaded; the message says how to get it."""


class PredictionError(FkdError, ValueError):
    """A model's predictions are unusable: the wrong shape, or non-finite values."""


class EnsembleWeightsError(FkdError, ValueError):
    """An ensemble weights file that is missing, unreadable or does not fit the models."""
