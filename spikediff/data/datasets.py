"""Dataset catalogue and loaders.

Images are returned as uint8 arrays of shape (N, H, W), the form they are distributed in; `to_model_range`
maps them to the [-1, 1] floats the diffusion models work in.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import SpikediffError
from .idx import IdxFormatError, decode_idx, read_raw


class DatasetNotFoundError(SpikediffError):
    pass


@dataclass(frozen=True)
class IdxDataset:
    name: str
    image_size: int
    # split -> (images file, labels file); files are stored gzip-compressed under data_root()/name/.
    files: dict = field(default_factory=dict)
    # file -> sha256 of the *uncompressed* IDX bytes, so re-compressed copies still verify.
    sha256: dict = field(default_factory=dict)
    num_classes: int = 10


_MNIST_STYLE_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

DATASETS: dict[str, IdxDataset] = {
    "mnist": IdxDataset(
        "mnist",
        28,
        _MNIST_STYLE_FILES,
        {
            # Official MNIST (md5 of the raw files: 6bbc9ace..., a25bea73..., 2646ac64..., 27ae3e4e...).
            "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
    ),
    "fashion-mnist": IdxDataset(
        "fashion-mnist",
        28,
        _MNIST_STYLE_FILES,
        {
            "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
    ),
}

# scikit-learn's bundled 1,797 8x8 digits: always available, used by the tests.
BUNDLED = ("digits",)
ALL_NAMES = tuple(DATASETS) + BUNDLED


def data_root() -> Path:
    """Where fetched datasets live: $SPIKEDIFF_DATA, else ~/.cache/spikediff/data."""
    env = os.environ.get("SPIKEDIFF_DATA")
    return Path(env) if env else Path.home() / ".cache" / "spikediff" / "data"


def sha256_hex(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def _read_verified(path: Path, expected_sha: str, dataset: str) -> np.ndarray:
    hint = f"run `spikediff data fetch {dataset}` to fetch it again"
    try:
        raw = read_raw(path)
    except IdxFormatError as exc:
        raise DatasetNotFoundError(f"{exc}; {hint}") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetNotFoundError(f"{path}: cannot be read ({exc}); {hint}") from None
    if sha256_hex(raw) != expected_sha:
        raise DatasetNotFoundError(f"{path}: checksum mismatch (corrupt or not the official file); {hint}")
    try:
        return decode_idx(raw, str(path))
    except IdxFormatError as exc:
        raise DatasetNotFoundError(f"{exc}; {hint}") from None


def _load_digits(split: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # Pixel values are 0..16; scale to the 0..255 range the other datasets use.
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    labels = bunch.target.astype(np.uint8)
    # A fixed, documented split: every fifth image is test (359 test, 1,438 train).
    test = np.arange(len(images)) % 5 == 4
    mask = test if split == "test" else ~test
    return images[mask], labels[mask]


def load_images(
    name: str, split: str = "train", root: Path | None = None, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Return (images uint8 (N, H, W), labels uint8 (N,)) for a dataset split."""
    if split not in ("train", "test"):
        raise SpikediffError(f"unknown split {split!r}: choose 'train' or 'test'")
    if name == "digits":
        images, labels = _load_digits(split)
    elif name in DATASETS:
        spec = DATASETS[name]
        folder = (root or data_root()) / name
        img_file, lab_file = spec.files[split]
        paths = [folder / (f + ".gz") for f in (img_file, lab_file)]
        missing = [p for p in paths if not p.exists()]
        if missing:
            raise DatasetNotFoundError(
                f"dataset {name!r} not found: {missing[0]} is missing. "
                f"Run `spikediff data fetch {name}` (or pass --from DIR with the IDX files)."
            )
        images = _read_verified(paths[0], spec.sha256[img_file], name)
        labels = _read_verified(paths[1], spec.sha256[lab_file], name)
        if len(images) != len(labels):
            raise DatasetNotFoundError(f"{folder}: {len(images)} images but {len(labels)} labels")
    else:
        raise SpikediffError(f"unknown dataset {name!r}: choose one of {', '.join(ALL_NAMES)}")
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return images, labels


def image_size(name: str) -> int:
    if name == "digits":
        return 8
    if name not in DATASETS:
        raise SpikediffError(f"unknown dataset {name!r}: choose one of {', '.join(ALL_NAMES)}")
    return DATASETS[name].image_size


def to_model_range(images: np.ndarray):
    """uint8 (N, H, W) -> float32 torch tensor (N, 1, H, W) in [-1, 1]."""
    import torch

    return torch.from_numpy(np.asarray(images, dtype=np.float32) / 127.5 - 1.0).unsqueeze(1)
