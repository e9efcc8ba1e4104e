"""Safe file I/O: outputs and checkpoints are either complete or absent, never half-written; inputs are read
only from regular files (a FIFO or a device would block or never end); outputs are checked before the work.

A temporary file is named ``<name>.<host>.<pid>.<random>.part`` beside its target, so that the next write of
the same target can tell a leftover of a killed writer (its pid gone) from a file being written right now.
"""

from __future__ import annotations

import glob
import os
import socket
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path

from . import SpikediffError

PART = ".part"


def _host() -> str:
    return socket.gethostname().replace(".", "_") or "host"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def remove_stale_parts(folder: str | Path, name: str | None = None) -> list:
    """Remove the ``.part`` files in ``folder`` (of target ``name``, or of every target) whose writer, a
    process on this host, is gone; returns the paths removed. Files of other hosts or of live writers stay."""
    folder, host, removed = Path(folder), _host(), []
    pattern = f"{glob.escape(name)}.*{PART}" if name is not None else f"*{PART}"
    try:
        candidates = list(folder.glob(pattern))
    except OSError:
        return removed
    for part in candidates:
        fields = part.name[:-len(PART)].split(".")
        if len(fields) < 4 or fields[-3] != host or not fields[-2].isdigit():
            continue  # not ours to judge
        pid = int(fields[-2])
        if pid != os.getpid() and not _pid_alive(pid):
            try:
                part.unlink()
                removed.append(part)
            except OSError:
                pass
    return removed


@contextmanager
def atomic_path(path: str | Path, mode: int = 0o644):
    """Yield a temporary path beside `path`; on success it is renamed over `path`, on error removed.

    Leftovers of killed writers of the same target are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_parts(path.parent, path.name)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{path.name}.{_host()}.{os.getpid()}.", suffix=PART)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_json_atomic(obj, path: str | Path) -> Path:
    import json

    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(obj, indent=1) + "\n")
    return Path(path)


def save_npy_atomic(array, path: str | Path) -> Path:
    import numpy as np

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array)
    return Path(path)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a directory")):
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path: str | Path, what: str, error=SpikediffError):
    """Open ``path`` for reading in binary mode, only if it is a regular file: raises ``error`` with a
    one-line message naming ``what`` and the path otherwise. Opened without blocking (a FIFO with no writer
    would block ``open`` itself) and checked on the open descriptor, so a swap after the check cannot slip
    a FIFO in."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise error(f"{what} {path}: no such file") from None
    except NotADirectoryError:
        raise error(f"{what} {path}: no such file (a part of the path is a file)") from None
    except OSError as exc:
        raise error(f"{what} {path}: cannot be read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(st.st_mode):
        raise error(f"{what} {path}: is a directory")
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{what} {path}: {_kind(st.st_mode)}, not a regular file")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise error(f"{what} {path}: cannot be read ({exc.strerror or exc})") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise error(f"{what} {path}: {_kind(st.st_mode)}, not a regular file")
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_regular(path: str | Path, what: str, error=SpikediffError) -> bytes:
    """The bytes of a regular file (see ``open_regular``)."""
    with open_regular(path, what, error) as fh:
        try:
            return fh.read()
        except OSError as exc:
            raise error(f"{what} {Path(path)}: cannot be read ({exc.strerror or exc})") from None


def _first_existing(path: Path) -> Path:
    p = path
    while not os.path.lexists(p) and p != p.parent:
        p = p.parent
    return p


def _probe_writable(folder: Path) -> str | None:
    """Why a file cannot be created in ``folder``, or None: tried for real (access() says yes to root, also on
    a read-only file system)."""
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".spikediff-probe.", suffix=PART)
    except OSError as exc:
        return exc.strerror or str(exc)
    os.close(fd)
    os.unlink(tmp)
    return None


def check_output(path: str | Path, what: str = "output", directory: bool = False) -> bool:
    """Check before any work that ``path`` can be written: a file (``directory=False``) or a folder to write
    into. Missing folders on the way are fine (they are created then) if the nearest existing one is a
    writable folder. Returns whether ``path`` exists (and will be overwritten, or written into)."""
    path = Path(path)
    if os.path.lexists(path):
        st = os.stat(path) if path.exists() else None
        if st is None:
            raise SpikediffError(f"{what} {path}: a broken symbolic link")
        if directory and not stat.S_ISDIR(st.st_mode):
            raise SpikediffError(f"{what} {path}: exists and is not a directory")
        if not directory and stat.S_ISDIR(st.st_mode):
            raise SpikediffError(f"{what} {path}: is a directory, not a file")
        if not directory and not stat.S_ISREG(st.st_mode):
            raise SpikediffError(f"{what} {path}: exists and is {_kind(st.st_mode)}, not a regular file")
        folder = path if directory else path.parent
        why = _probe_writable(folder)
        if why is not None:
            raise SpikediffError(f"{what} {path}: folder {folder} is not writable ({why})")
        return True
    parent = _first_existing(path.parent if not directory else path)
    if not parent.is_dir():
        raise SpikediffError(f"{what} {path}: {parent} is a file, not a folder")
    why = _probe_writable(parent)
    if why is not None:
        raise SpikediffError(f"{what} {path}: folder {parent} is not writable ({why})")
    return False
