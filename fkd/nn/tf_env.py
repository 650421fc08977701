"""Prepare TensorFlow and Keras: import this module before tensorflow or keras.

It puts Keras on the TensorFlow backend (``KERAS_BACKEND``, unless set) and quiets TensorFlow's start-up logging.

On a machine without a GPU, TensorFlow prints a screenful at import and at its first operation:
the oneDNN notice, "Could not find cuda drivers", CPU-instruction advice, "failed call to cuInit".
Importing this module

- sets ``TF_CPP_MIN_LOG_LEVEL=3`` unless it is set already (a value the user set is kept);
- imports TensorFlow with the process's stderr (file descriptor 2) captured, because the lines
  TensorFlow logs before it reads that variable ("All log messages before absl::InitializeLog()
  is called are written to STDERR", the oneDNN notice, ...) ignore it; the captured lines are
  filtered by the same level and everything else is passed on;
- turns the ``tensorflow`` and absl Python loggers down to match.

It changes no setting that affects results: ``TF_ENABLE_ONEDNN_OPTS`` and ``CUDA_VISIBLE_DEVICES``
are left alone. ``FKD_TF_VERBOSE=1`` leaves everything as TensorFlow has it; use it too if the
import ever kills the process outright (an abort cannot pass the captured lines on).
"""
from __future__ import annotations

import logging
import os
import re
import sys
import tempfile

VERBOSE_SWITCH = "FKD_TF_VERBOSE"
QUIET_LEVEL = "3"  # TF_CPP_MIN_LOG_LEVEL: 0 all, 1 no INFO, 2 no WARNING either, 3 no ERROR either

#: absl's C++ log line: severity letter, date, time, thread, file:line]
_LOG_LINE = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ \S+:\d+\] ")
_BEFORE_INIT = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
_SEVERITY = {"I": 0, "W": 1, "E": 2, "F": 3}


def verbose() -> bool:
    """Whether FKD_TF_VERBOSE asks for all of TensorFlow's messages."""
    return os.environ.get(VERBOSE_SWITCH, "").strip().lower() in ("1", "true", "yes", "on")


def min_log_level() -> int:
    """TF_CPP_MIN_LOG_LEVEL as TensorFlow reads it (0 when unset or not a number)."""
    try:
        return int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    except ValueError:
        return 0


def filter_log(text: str, level: int) -> str:
    """Drop the C++ log messages below ``level`` (and their continuation lines) from captured stderr."""
    kept, dropping = [], False
    for line in text.splitlines(keepends=True):
        match = _LOG_LINE.match(line)
        if match:
            dropping = _SEVERITY[match.group(1)] < level
        elif line.rstrip("\n") == _BEFORE_INIT:
            dropping = False  # a line of its own: the next line decides for itself
            if level >= 1:
                continue
        elif dropping and (line.startswith("Traceback") or re.match(r"^\S.*:\d+: \w*(Warning|Error)\b", line)):
            dropping = False  # Python's own output, not a continuation of the dropped message
        if not dropping:
            kept.append(line)
    return "".join(kept)


def quiet_tensorflow() -> None:
    """Set the environment and import TensorFlow quietly (see the module docstring); safe to call twice."""
    if verbose():
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", QUIET_LEVEL)
    level = min_log_level()
    if level >= 1:
        python_level = logging.WARNING if level == 1 else logging.ERROR
        logging.getLogger("tensorflow").setLevel(python_level)
        try:
            from absl import logging as absl_logging

            absl_logging.set_verbosity(python_level)
        except ImportError:
            pass
    if level >= 1 and "tensorflow" not in sys.modules:
        _import_with_stderr_filtered(level)


def _import_with_stderr_filtered(level: int) -> None:
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        except ModuleNotFoundError as exc:
            if exc.name != "tensorflow":
                raise  # TensorFlow is there but broken: show why
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = filter_log(capture.read().decode("utf-8", errors="replace"), level)
            if kept:
                os.write(2, kept.encode())


os.environ.setdefault("KERAS_BACKEND", "tensorflow")  # this project's CNN is written for it
quiet_tensorflow()
