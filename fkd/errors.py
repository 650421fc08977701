"""The library's domain errors that the entry points (stages, ``fkd.predict``) turn into one-line
messages and exit code 2. Anything else is a bug and keeps its traceback. (``ParamsError`` lives in
:mod:`fkd.config`, ``DataError`` in :mod:`fkd.data`.)"""


class TrainingError(RuntimeError):
    """Training produced nothing usable (no epoch ran, or no finite validation RMSE)."""


class ModelFileError(RuntimeError):
    """A model file (or the ensemble's weights) is missing or cannot be loaded; the message says how to get it."""


class PredictionError(ValueError):
    """A model's predictions are unusable: the wrong shape, or non-finite values."""


class EnsembleWeightsError(ValueError):
    """An ensemble weights file that is missing, unreadable or does not fit the models."""
