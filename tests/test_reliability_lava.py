"""No Lava worker outlives its parent: SIGTERM stops the run cleanly, SIGKILL takes the workers with it.

Real Lava processes (Loihi2SimCfg on the CPU), no mocks: a tiny graph run in short chunks through
``spikediff.runtime.session.lava_session``, the session every spikediff Lava run goes through.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT

SCRIPT = r'''
import sys

import numpy as np

from spikediff import lava_compat

lava_compat.import_lava()
from lava.proc.dense.process import Dense
from lava.proc.io.sink import RingBuffer as Sink
from lava.proc.io.source import RingBuffer as Source
from lava.proc.lif.process import LIF

from spikediff import RunFailure
from spikediff.runtime.session import lava_session, run_config

src = Source(data=np.ones((4, 16)))
dense = Dense(weights=np.eye(4) * 2.0)
lif = LIF(shape=(4,), du=1.0, dv=0.25, vth=1.0)
sink = Sink(shape=(4,), buffer=16)
src.s_out.connect(dense.s_in)
dense.a_out.connect(lif.a_in)
lif.s_out.connect(sink.a_in)
cfg, _ = run_config("sim")
try:
    with lava_session(src, cfg) as run:
        for i in range(100000):
            run(16)
            if i == 0:
                print("running", flush=True)
except RunFailure as exc:
    print(exc, flush=True)
    sys.exit(1)
except KeyboardInterrupt as exc:
    print("stopped", flush=True)
    sys.exit(128 + (exc.args[0] if exc.args else 2))
'''


def _alive_in_session(sid: int) -> list:
    """Pids of the processes of session ``sid`` that are not zombies, from /proc (no psutil needed)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state ppid pgrp session ...
        if int(fields[3]) == sid and fields[0] not in "ZX":
            pids.append(int(entry.name))
    return pids


def _start(tmp_path):
    script = tmp_path / "lava_forever.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, str(script)], cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()  # after the first chunk: every worker is up
    assert line.strip() == "running", proc.stderr.read() if proc.poll() is not None else line
    workers = [pid for pid in _alive_in_session(proc.pid) if pid != proc.pid]
    assert len(workers) >= 4, workers  # the runtime service, one per process model, the shared-memory manager
    return proc, workers


def _wait_gone(sid: int, timeout: float = 15.0) -> list:
    deadline = time.time() + timeout
    while time.time() < deadline:
        left = _alive_in_session(sid)
        if not left:
            return []
        time.sleep(0.2)
    return _alive_in_session(sid)


@pytest.mark.parametrize("how", ["SIGTERM to the parent", "SIGTERM to the whole group", "SIGKILL to the parent",
                                 "SIGKILL to a worker"])
def test_no_lava_worker_outlives_its_parent(tmp_path, how):
    proc, workers = _start(tmp_path)
    try:
        if how == "SIGTERM to the parent":
            os.kill(proc.pid, signal.SIGTERM)
        elif how == "SIGTERM to the whole group":  # what a service manager or `kill -- -PGID` does
            os.killpg(proc.pid, signal.SIGTERM)
        elif how == "SIGKILL to a worker":  # the out-of-memory killer: Lava alone would wait for its reply for ever
            os.kill(workers[0], signal.SIGKILL)
        else:
            os.kill(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=30)
        left = _wait_gone(proc.pid)
    finally:
        for pid in _alive_in_session(proc.pid):  # never leave anything behind, even when the test fails
            os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert left == [], f"{len(left)} of {len(workers)} Lava workers still running after {how}"
    if how.startswith("SIGTERM"):  # stopped cleanly at the end of a chunk, exit status 128 + 15
        assert proc.returncode == 128 + signal.SIGTERM, err
        assert "stopped" in out and "Traceback" not in err, err
    elif how == "SIGKILL to a worker":  # the run ends in one line naming it, exit status 1 (the machine failed)
        assert proc.returncode == 1, err
        assert f"a Lava worker (pid {workers[0]}) was killed by SIGKILL" in out and "Traceback" not in err, err
    else:
        assert proc.returncode == -signal.SIGKILL


def test_sigterm_stops_spikediff_sample_on_lava_and_writes_nothing(tmp_path):
    from spikediff.models import DenoiserConfig
    from spikediff.train import TrainConfig, train

    ckpt = train(TrainConfig(data="digits", steps=2, batch_size=4, model=DenoiserConfig(channels=4, hidden=16)),
                 tmp_path / "run", progress=False, log=lambda _m: None)
    out = tmp_path / "grid.png"
    proc = subprocess.Popen([sys.executable, "-m", "spikediff", "sample", str(ckpt), "--backend", "lava", "-n", "50",
                             "--steps", "50", "-o", str(out)], cwd=ROOT, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while len(_alive_in_session(proc.pid)) < 5 and time.time() < deadline:  # Lava's workers are up
            time.sleep(0.3)
        assert len(_alive_in_session(proc.pid)) >= 5, "Lava never started"
        time.sleep(1)
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        left = _wait_gone(proc.pid)
    finally:
        for pid in _alive_in_session(proc.pid):
            os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert left == []
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert err.strip().splitlines()[-1] == "spikediff: terminated" and "Traceback" not in err, err
    assert not out.exists() and not list(tmp_path.glob("*.part"))  # nothing half-written


def _sleep_for_ever():
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # as a Lava worker does
    while True:
        time.sleep(1)


def test_a_stop_that_hangs_kills_the_workers():
    """Lava's stop joins its workers; one stuck (a signal in the middle of reading a Var back) would hold the
    parent for ever. The stop's watchdog kills the workers, which lets the join return."""
    import multiprocessing

    from spikediff.runtime.session import _stop

    worker = multiprocessing.get_context("fork").Process(target=_sleep_for_ever)
    worker.start()

    class StuckRun:  # stops the way Lava's runtime does: by joining its workers
        def stop(self):
            worker.join()

    start = time.monotonic()
    with pytest.warns(RuntimeWarning, match="workers were killed"):
        _stop(StuckRun(), quiet=False, timeout=1.0)
    assert time.monotonic() - start < 30
    # the stop's join and the watchdog's both wait for the killed worker: the one that reaps it records its exit
    # code a moment after the other returns (a loaded machine once saw it alive in between)
    deadline = time.monotonic() + 10
    while worker.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not worker.is_alive() and worker.exitcode == -signal.SIGKILL


def test_a_worker_that_raises_is_reported_in_one_line_and_nothing_waits_for_it():
    """Lava ends every worker when one raises, logs the traceback where nobody sees it, and its stop would then
    wait for ever for the ended workers' reply. The session names the worker's error and leaves no process."""
    import multiprocessing

    import numpy as np

    from spikediff import RunFailure, lava_compat
    from spikediff.runtime.session import lava_session

    lava_compat.import_lava()
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.conv.models import PyConvModelFixed
    from lava.proc.conv.process import Conv
    from lava.proc.io.source import RingBuffer as Source

    class Failing(PyConvModelFixed):
        def run_spk(self):
            self.a_out.send(np.zeros(self.a_out.shape, dtype=np.int32))
            self.s_in.recv()
            if self.time_step == 3:
                raise ValueError("weights out of range in layer e0")

    src = Source(data=np.ones((4, 4, 2, 8), dtype=np.int32))
    conv = Conv(weight=np.ones((3, 3, 3, 2), dtype=np.int32), input_shape=(4, 4, 2), padding=1)
    src.s_out.connect(conv.s_in)
    cfg = Loihi2SimCfg(select_tag="fixed_pt", exception_proc_model_map={Conv: Failing})
    start = time.monotonic()
    with pytest.raises(RunFailure, match=r"^Lava's run stopped: a worker raised ValueError: weights out of "
                                             r"range in layer e0 \(File .*test_reliability_lava.py"):
        with lava_session(conv, cfg) as run:
            run(2)
            run(2)
    assert time.monotonic() - start < 60
    assert not [p for p in multiprocessing.active_children() if p.is_alive()]
