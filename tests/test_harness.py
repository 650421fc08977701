"""The suite's own guard: a command that hangs fails its test, and leaves nothing of itself running."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from tests.conftest import run

#: A command that starts a child of its own and then hangs; it prints the child's pid first.
HANGS = "import subprocess, time; print(subprocess.Popen(['sleep', '300']).pid, flush=True); time.sleep(300)"


def running(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie that no parent reaped has stopped: it counts as not running)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def test_a_hung_command_fails_with_what_it_printed_and_its_children_are_killed(tmp_path):
    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"did not finish in 2 s and was killed") as failure:
        run([sys.executable, "-c", HANGS], cwd=tmp_path, timeout=2)
    assert time.monotonic() - started < 60
    child = int(str(failure.value).splitlines()[1])
    deadline = time.monotonic() + 10
    while running(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not running(child)  # the grandchild is killed too, not left running after the test
