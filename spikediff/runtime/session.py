"""One way to run a Lava process graph: the run config, the parent's threads, and a stop on every exit."""

from __future__ import annotations

import warnings
from contextlib import contextmanager

from .. import SpikediffError

TARGETS = ("auto", "sim", "loihi2")


def loihi2_available() -> bool:
    """Whether Intel's Lava extension for Loihi (lava-loihi, for INRC members) is importable."""
    from .. import lava_compat

    lava_compat.import_lava()
    from lava.utils import loihi

    return loihi.is_installed()


def run_config(target: str = "auto", select_tag: str = "floating_pt", profilers=None):
    """(Lava run config, what it runs on): Loihi 2 when asked for or, with ``auto``, when it is there; on a chip
    the hardware configuration of ``runtime.loihi2`` (fixed point only; ``profilers``: its power, time and
    activity probes)."""
    from .. import lava_compat

    if target not in TARGETS:
        raise SpikediffError(f"--lava-target: expected one of {', '.join(TARGETS)}, got {target!r}")
    lava_compat.import_lava()
    from lava.magma.core.run_configs import Loihi2SimCfg

    chip = target != "sim" and loihi2_available()
    if target == "loihi2" or chip:
        if not chip:
            raise SpikediffError("--lava-target loihi2: Intel's Lava extension for Loihi (lava-loihi, distributed to "
                                 "INRC members) is not installed here, so Lava cannot reach a chip; use --lava-target "
                                 "sim (Lava's CPU simulator, Loihi2SimCfg) or --lava-target auto")
        if select_tag != "fixed_pt":
            raise SpikediffError("--lava-target loihi2: a Loihi 2 chip computes in fixed point only; add --fixed-point")
        from .loihi2 import hardware_run_config, select_host

        where = select_host()
        return hardware_run_config(profilers), f"Loihi 2 (Loihi2HwCfg, {where})"
    return Loihi2SimCfg(select_tag=select_tag), f"Lava CPU simulator (Loihi2SimCfg, {select_tag})"


@contextmanager
def lava_session(process, run_cfg):
    """Yield ``run(num_steps)`` for the graph that ``process`` belongs to, run with ``run_cfg`` (from
    ``run_config``); always stop it afterwards.

    Lava forks its worker processes and its Conv runs torch inside them: a parent with a running
    OpenMP pool can deadlock them, so the parent is single-threaded for the session. Lava also scans
    sibling files for process models and warns that it cannot import them by path; that warning is
    dropped. ``stop()`` runs on errors and Ctrl-C too, so no worker outlives the session.

    Ctrl-C is taken between two ``run`` calls: a KeyboardInterrupt raised in the middle of Lava's
    command/reply exchange can be lost or leave a stray reply that breaks ``stop()``. The first Ctrl-C
    lets the current call finish (callers keep calls short) and then raises KeyboardInterrupt; a second
    one raises at once. Forked workers inherit the handler, so a terminal's Ctrl-C, which reaches the
    whole process group, does not kill them behind the runtime's back.
    """
    import signal
    import threading

    import torch

    from .. import lava_compat

    lava_compat.import_lava()
    from lava.magma.core.run_conditions import RunSteps

    threads = torch.get_num_threads()
    torch.set_num_threads(1)

    interrupted = []

    def on_sigint(signum, frame):
        if interrupted:
            raise KeyboardInterrupt
        interrupted.append(signum)

    def run(num_steps: int) -> None:
        if not interrupted:
            process.run(condition=RunSteps(num_steps=num_steps), run_cfg=run_cfg)
        if interrupted:
            raise KeyboardInterrupt

    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, on_sigint) if main else None
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Cannot import module", category=UserWarning)
            # Lava's DelaySparse model splits its matrix by delay with a csr assignment scipy warns about
            warnings.filterwarnings("ignore", message="Changing the sparsity structure")
            yield run
    except BaseException:
        _stop(process, quiet=True)  # the error that stopped the run is the one to report
        raise
    else:
        _stop(process, quiet=False)
    finally:
        torch.set_num_threads(threads)
        if main:
            signal.signal(signal.SIGINT, previous)


def _stop(process, quiet: bool) -> None:
    """Stop the run; if Lava's own stop fails (Ctrl-C can leave a reply to an interrupted command in its
    queues), terminate its workers so that none survives."""
    import multiprocessing

    try:
        process.stop()
    except Exception:
        for child in multiprocessing.active_children():
            child.terminate()
            child.join(timeout=5)
        if not quiet:
            raise
