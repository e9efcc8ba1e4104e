import io
import os
import signal
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import NamedTuple

import pytest

# The models in the tests are tiny: one thread is faster than two fighting over this 2-core machine, and
# subprocesses (CLI tests) inherit the setting.
os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]


def _fetched(name: str):
    """The real dataset, fetched once into the user's data root (the same path `spikediff data fetch` uses)."""
    from spikediff.data import data_root, fetch

    fetch(name, log=lambda _m: None)
    return data_root()


@pytest.fixture(scope="session")
def mnist_root():
    return _fetched("mnist")


@pytest.fixture(scope="session")
def fashion_root():
    return _fetched("fashion-mnist")


def run_cli(*args, timeout=300, env=None):
    """Run `python -m spikediff ...` in a fresh interpreter; returns the CompletedProcess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "spikediff", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=full_env)



class CliResult(NamedTuple):
    """What ``spikediff`` gave: unpacks as (status, stdout, stderr), or read like a CompletedProcess."""

    returncode: int
    stdout: str
    stderr: str


def run_main(*args, timeout: float = 30) -> CliResult:
    """``spikediff.cli.main`` in this process (no interpreter start-up, unlike ``run_cli``). A SIGALRM guards
    against a call that blocks (the FIFO cases), so a regression fails the test instead of hanging the suite."""
    from spikediff.cli import main

    out, err = io.StringIO(), io.StringIO()

    def too_long(signum, frame):
        raise TimeoutError(f"spikediff {' '.join(map(str, args))} blocked for {timeout} s")

    previous = signal.signal(signal.SIGALRM, too_long)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        with redirect_stdout(out), redirect_stderr(err):
            status = main([str(a) for a in args])
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    return CliResult(status, out.getvalue(), err.getvalue())
