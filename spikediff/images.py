"""Image grids as PNG files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from . import SpikediffError
from .atomic import atomic_path


def to_uint8(images) -> np.ndarray:
    """[-1, 1] tensor/array (N, C, H, W) -> uint8 (N, H, W, C)."""
    arr = np.asarray(images.detach().cpu() if hasattr(images, "detach") else images, dtype=np.float64)
    return np.rint((arr.clip(-1, 1) + 1) * 127.5).astype(np.uint8).transpose(0, 2, 3, 1)


def grid(images, ncols: int | None = None, pad: int = 2) -> np.ndarray:
    imgs = to_uint8(images)
    n, h, w, c = imgs.shape
    ncols = ncols or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    canvas = np.zeros((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), dtype=np.uint8)
    for i, img in enumerate(imgs):
        r, col = divmod(i, ncols)
        canvas[pad + r * (h + pad):pad + r * (h + pad) + h, pad + col * (w + pad):pad + col * (w + pad) + w] = img
    return canvas


def check_png_path(path: str | Path) -> Path:
    """Reject a bad output path before any work is done. A name without a suffix, or an existing directory
    whose name does not end in .png, means ``samples.png`` inside it; a ``.png`` name must be a file (an
    existing directory called ``grid.png`` is an error, not a folder to write into)."""
    path = Path(path)
    if path.suffix == "" or (path.is_dir() and path.suffix.lower() != ".png"):
        path = path / "samples.png"
    if path.suffix.lower() != ".png":
        raise SpikediffError(f"output {path}: must end in .png (or name a directory)")
    if path.is_dir():
        raise SpikediffError(f"output {path}: is a directory, not a PNG file")
    return path


def save_grid(images, path: str | Path, ncols: int | None = None, scale: int = 2) -> Path:
    """Write a PNG grid atomically; `scale` enlarges small images with nearest-neighbour."""
    from PIL import Image

    path = check_png_path(path)
    canvas = grid(images, ncols)
    if scale > 1:
        canvas = canvas.repeat(scale, axis=0).repeat(scale, axis=1)
    img = Image.fromarray(canvas[..., 0] if canvas.shape[-1] == 1 else canvas)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return path
