"""One way to run a Lava process graph: the run config, the parent's threads, and a stop on every exit."""

from __future__ import annotations

import os
import signal
import warnings
from contextlib import contextmanager, nullcontext

from .. import RunFailure, SpikediffError

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
    exceptions = {}
    if select_tag == "fixed_pt":  # Lava's Conv process, computed in torch rather than scipy (lava_processes)
        from lava.proc.conv.process import Conv

        from .lava_processes import PyConvFixedTorch

        exceptions[Conv] = PyConvFixedTorch
    return (Loihi2SimCfg(select_tag=select_tag, exception_proc_model_map=exceptions),
            f"Lava CPU simulator (Loihi2SimCfg, {select_tag})")


# Workers die with the process that forked them (Linux): while a session is active, every child forked from
# the main thread asks the kernel for SIGKILL when its parent dies (PR_SET_PDEATHSIG), so neither SIGKILL
# nor a crash of spikediff leaves Lava's workers running. The kernel ties the signal to the forking
# *thread*; Lava forks from the main thread, which lives as long as the process, and forks from any other
# thread are left alone. ``os.register_at_fork`` cannot be undone, so the hook is installed once and acts
# only while ``_ACTIVE`` counts an open session.
_PR_SET_PDEATHSIG = 1
_ACTIVE = [0]
_FORK = {"pid": 0, "main": False}
_HOOKED = []


def _before_fork() -> None:
    import threading

    _FORK["pid"] = os.getpid()
    _FORK["main"] = threading.current_thread() is threading.main_thread()


def _after_fork_in_child() -> None:
    """In a Lava worker: die with the parent; leave SIGINT and SIGTERM to the parent, which stops the run."""
    if not _ACTIVE[0] or not _FORK["main"]:
        return
    if not die_with_parent(_FORK["pid"]):
        return
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            signal.signal(signum, signal.SIG_IGN)
        except (ValueError, OSError):
            pass


def die_with_parent(parent_pid: int) -> bool:
    """Ask the kernel to SIGKILL this process when its parent dies; exit at once if it already has.

    Returns False where the kernel offers no such request (not Linux)."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() != parent_pid:  # the parent died before the request: nobody would send the signal
        os._exit(1)
    return True


def _install_fork_hook() -> None:
    if not _HOOKED:
        os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
        _HOOKED.append(True)


@contextmanager
def lava_session(process, run_cfg):
    """Yield ``run(num_steps)`` for the graph that ``process`` belongs to, run with ``run_cfg`` (from
    ``run_config``); always stop it afterwards.

    Lava forks its worker processes and its Conv runs torch inside them: a parent with a running
    OpenMP pool can deadlock them, so the parent is single-threaded for the session. Lava also scans
    sibling files for process models and warns that it cannot import them by path; that warning is
    dropped. ``stop()`` runs on errors, Ctrl-C and SIGTERM too, and every worker is forked with a
    parent-death signal, so no worker outlives the session, not even after ``kill -9`` of the parent.

    Ctrl-C and SIGTERM are taken between two ``run`` calls: a KeyboardInterrupt raised in the middle of
    Lava's command/reply exchange can be lost or leave a stray reply that breaks ``stop()``. The first
    signal lets the current call finish (callers keep calls short) and then raises
    ``KeyboardInterrupt(signum)``; a second one raises at once. Workers ignore both signals (a terminal's
    Ctrl-C reaches the whole process group, a service manager's SIGTERM the whole group too): the parent
    stops them, or the kernel kills them when the parent dies.

    A worker that raises ends the run with a one-line ``RunFailure`` naming its exception and where (Lava only
    logs the traceback, below its default log level); Lava has ended the run's workers by then and its stop
    would wait for their reply for ever, so the session kills what is left instead. A worker killed during a run
    (the out-of-memory killer) would leave Lava waiting for its reply for ever too: ``_WorkerWatch`` sees it and
    ends the run with a ``RunFailure`` that names the signal.
    """
    import threading

    import torch

    from .. import lava_compat

    lava_compat.import_lava()
    from lava.magma.core.run_conditions import RunSteps

    threads = torch.get_num_threads()
    torch.set_num_threads(1)

    interrupted = []

    def on_signal(signum, frame):
        if interrupted:
            raise KeyboardInterrupt(signum)
        interrupted.append(signum)

    failed = []
    main = threading.current_thread() is threading.main_thread()
    watch = _WorkerWatch() if main else None

    def run(num_steps: int) -> None:
        if not interrupted:
            try:
                with watch or nullcontext():
                    process.run(condition=RunSteps(num_steps=num_steps), run_cfg=run_cfg)
            except _WorkerDied as exc:
                failed.append(True)
                raise RunFailure(f"Lava's run stopped: {exc}") from None
            except RuntimeError as exc:
                failure = _worker_failure(process)
                if failure is None:
                    raise
                failed.append(True)
                raise RunFailure(f"Lava's run stopped: {failure}") from exc
        if interrupted:
            raise KeyboardInterrupt(interrupted[0])

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}
    if watch is not None:
        previous[_WorkerWatch.SIGNAL] = signal.signal(_WorkerWatch.SIGNAL, watch.on_signal)
    _install_fork_hook()
    _ACTIVE[0] += 1
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Cannot import module", category=UserWarning)
            # Lava's DelaySparse model splits its matrix by delay with a csr assignment scipy warns about
            warnings.filterwarnings("ignore", message="Changing the sparsity structure")
            yield run
    except BaseException:
        if failed:  # its workers have ended; Lava's stop would wait for ever for their reply
            _kill_workers()
        else:
            _stop(process, quiet=True)  # the error that stopped the run is the one to report
        raise
    else:
        _stop(process, quiet=False)
    finally:
        if watch is not None:
            watch.close()
        _ACTIVE[0] -= 1
        torch.set_num_threads(threads)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class _WorkerDied(Exception):
    """Raised in the main thread, out of Lava's wait for a reply, when a worker was killed during a run."""


class _WorkerWatch:
    """Watches the session's child processes while a Lava run call is under way. A worker killed by a signal
    (the out-of-memory killer, a stray ``kill -9``) never replies, and Lava would wait for its reply for ever;
    the watch then interrupts the main thread with ``SIGNAL``, whose handler raises ``_WorkerDied`` naming the
    worker. It only peeks at the children's exit status (``waitid`` with ``WNOWAIT``), so Lava and
    multiprocessing still reap them as before. Children are found by their parent pid in ``/proc`` (Linux)."""

    SIGNAL = signal.SIGUSR1
    PERIOD_S = 0.5

    def __init__(self):
        import threading

        self._main = threading.main_thread().ident
        self._running = threading.Event()
        self._closed = threading.Event()
        self._dead: str | None = None
        self._thread = threading.Thread(target=self._poll, name="lava-worker-watch", daemon=True)
        self._thread.start()

    def __enter__(self):
        if self._dead:  # killed between two run calls: Lava would wait for it in the next one
            raise _WorkerDied(self._dead)
        self._running.set()
        return self

    def __exit__(self, *exc) -> None:
        self._running.clear()

    def on_signal(self, signum, frame) -> None:
        if self._running.is_set() and self._dead:
            self._running.clear()
            raise _WorkerDied(self._dead)

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=5)

    def _poll(self) -> None:
        while not self._closed.wait(self.PERIOD_S):
            if self._dead:
                continue
            for pid in _children(os.getpid()):
                try:
                    info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
                except ChildProcessError:  # reaped in between
                    continue
                if info is not None and info.si_code in (os.CLD_KILLED, os.CLD_DUMPED):
                    name = signal.Signals(info.si_status).name
                    self._dead = (f"a Lava worker (pid {pid}) was killed by {name} (the out-of-memory killer sends "
                                  "SIGKILL: see dmesg)" if info.si_status == signal.SIGKILL else
                                  f"a Lava worker (pid {pid}) was killed by {name}")
                    if self._running.is_set():
                        signal.pthread_kill(self._main, self.SIGNAL)
                    break


def _children(parent: int) -> list:
    """Pids whose parent is ``parent``, from /proc (no psutil)."""
    pids = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return pids
    for entry in entries:
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == parent:
                pids.append(int(entry))
    return pids


def _worker_failure(process) -> str | None:
    """What a failed worker raised, in one line, or None when no worker failed. Lava ends every worker after
    one raises, logs their tracebacks at INFO level (so nobody sees them) and raises only "N Exception(s)
    occurred"; each worker's exception and traceback are still on its actor."""
    runtime = getattr(process, "runtime", None)
    actors = getattr(getattr(runtime, "_messaging_infrastructure", None), "actors", None) or []
    for actor in actors:
        try:
            error, trace = actor.exception or (None, "")
        except Exception:  # its pipe closed: nothing to read
            continue
        if error is not None:
            frames = [line.strip() for line in str(trace).splitlines() if line.strip().startswith("File ")]
            where = f" ({frames[-1]})" if frames else ""
            return f"a worker raised {type(error).__name__}: {error}{where}"
    return None


STOP_TIMEOUT_S = 60.0  # Lava's stop joins its workers; one stuck mid-reply would hold the parent for ever


def _kill_workers() -> None:
    import multiprocessing

    for child in multiprocessing.active_children():
        child.kill()
        multiprocessing.Process.join(child, timeout=5)  # Lava's SystemProcess.join takes no timeout


def _stop(process, quiet: bool, timeout: float = STOP_TIMEOUT_S) -> None:
    """Stop the run; if Lava's own stop fails (Ctrl-C can leave a reply to an interrupted command in its
    queues), kill its workers (they ignore SIGTERM) so that none survives. If it hangs (a signal in the middle
    of reading a Var back left a worker relaying to nobody, and Lava joins it), the workers are killed after
    ``timeout`` seconds, which lets the join return; what the run produced was read before, so that is no error
    of the run (a warning says so)."""
    import threading

    fired = []

    def kill():
        fired.append(True)
        _kill_workers()

    watchdog = threading.Timer(timeout, kill)
    watchdog.daemon = True
    watchdog.start()
    try:
        process.stop()
    except Exception:
        _kill_workers()
        if not quiet and not fired:
            raise
    finally:
        watchdog.cancel()
    if fired:
        warnings.warn(f"Lava's stop did not finish in {timeout:g} s; its workers were killed", RuntimeWarning,
                      stacklevel=2)
