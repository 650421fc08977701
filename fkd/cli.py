"""What every stage's command line shares: logging set-up and clear errors instead of tracebacks."""
from __future__ import annotations

import logging
import sys
from typing import Callable

from fkd.config import ParamsError
from fkd.data import DataError
from fkd.errors import EnsembleWeightsError, ModelFileError, PredictionError, TrainingError

log = logging.getLogger("fkd")


class StageError(RuntimeError):
    """A failure the user can act on; printed without a traceback."""


def run_stage(main: Callable[[list[str]], None], argv: list[str] | None = None) -> None:
    """Run a stage's ``main(argv)``; user-facing errors become one line on stderr and exit code 2."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    try:
        main(sys.argv[1:] if argv is None else argv)
    except (ParamsError, DataError, StageError, TrainingError, ModelFileError, PredictionError, EnsembleWeightsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
