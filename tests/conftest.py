import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

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


@pytest.fixture
def cli(capsys):
    """``spikediff ...`` in this interpreter (no start-up of its own: the CLI's exit status and output as
    ``run_cli`` gives them, for tests that need no fresh process)."""
    from spikediff.cli import main

    def run(*args):
        capsys.readouterr()
        code = main([str(a) for a in args])
        out = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)

    return run
