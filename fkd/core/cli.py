"""What every stage's command line shares: logging set-up and clear errors instead of tracebacks."""
from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path
from typing import Callable

from fkd.core.errors import FkdError

log = logging.getLogger("fkd")


class StageError(FkdError, RuntimeError):
    """A failure the user can act on; printed without a traceback."""


def run_stage(main: Callable[[list[str]], None], argv: list[str] | None = None) -> None:
    """Run a stage's ``main(argv)``; user-facing errors become one line on stderr and exit code 2, Ctrl-C one
    line and exit code 130."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    try:
        main(sys.argv[1:] if argv is None else argv)
    except FkdError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C while the message is made: no traceback
        print(interrupted_message(main), file=sys.stderr)
        sys.exit(130)


def interrupted_message(main: Callable) -> str:
    """What Ctrl-C left. Outputs are written through a temporary file or folder (a training stage's metrics
    folder whole, :func:`fkd.core.io.staged_dir`), so a stage run by itself leaves those it had not finished as
    they were; ``dvc repro`` (which sets DVC_STAGE) removed the stage's outputs before running it."""
    stage = os.environ.get("DVC_STAGE")
    if stage:
        return f"interrupted: {stage} stopped; dvc had removed its outputs before running it: {_recovery(stage)}"
    return f"interrupted: {_name(main)} stopped; the outputs it had not finished were left as they were"


def _recovery(stage: str) -> str:
    """The commands that put back the committed outputs of ``stage``: git's for ``cache: false`` ones, DVC's for the rest."""
    try:
        from dvc.repo import Repo

        with Repo() as repo:
            outs = [out for s in repo.stage.collect(stage) for out in s.outs]
    except Exception:  # noqa: BLE001  only the hint is lost
        return f"`git checkout -- metrics/ plots/ && dvc checkout {stage}` puts back the committed ones"
    commands = []
    if tracked := [str(out) for out in outs if not out.use_cache]:
        commands.append(f"git checkout -- {' '.join(tracked)}")
    if len(tracked) < len(outs):
        commands.append(f"dvc checkout {stage}")
    return f"`{' && '.join(commands)}` puts back the committed ones"


def _name(main: Callable) -> str:
    module = main.__module__
    if module == "__main__":  # python -m stages.x: the module's own name is in its spec
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        module = spec.name if spec else Path(sys.argv[0]).stem
    return module.removeprefix("stages.")
