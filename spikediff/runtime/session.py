"""One way to run a Lava process graph: the run config, the parent's threads, and a stop on every exit."""

from __future__ import annotations

import warnings
from contextlib import contextmanager


@contextmanager
def lava_session(process):
    """Yield ``run(num_steps)`` for the graph that ``process`` belongs to; always stop it afterwards.

    Lava forks its worker processes and its Conv runs torch inside them: a parent with a running
    OpenMP pool can deadlock them, so the parent is single-threaded for the session. Lava also scans
    sibling files for process models and warns that it cannot import them by path; that warning is
    dropped. ``stop()`` runs on errors and Ctrl-C too, so no worker outlives the session.
    """
    import torch

    from .. import lava_compat

    lava_compat.import_lava()
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg

    threads = torch.get_num_threads()
    torch.set_num_threads(1)

    def run(num_steps: int) -> None:
        process.run(condition=RunSteps(num_steps=num_steps), run_cfg=Loihi2SimCfg(select_tag="floating_pt"))

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Cannot import module", category=UserWarning)
            yield run
    finally:
        try:
            process.stop()
        finally:
            torch.set_num_threads(threads)
