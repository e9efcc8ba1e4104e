"""Reader and writer for the IDX format that MNIST and Fashion-MNIST are distributed in."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

# Magic numbers of the two IDX kinds used here: 0x0803 = uint8 with 3 dims, 0x0801 = uint8 with 1 dim.
_MAGIC_IMAGES = 0x00000803
_MAGIC_LABELS = 0x00000801


class IdxFormatError(ValueError):
    pass


def decode_idx(raw: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode uncompressed IDX bytes (uint8 payloads only, which is all MNIST-style data uses)."""
    if len(raw) < 8:
        raise IdxFormatError(f"{name}: too short to be an IDX file ({len(raw)} bytes)")
    (magic,) = struct.unpack(">I", raw[:4])
    if magic not in (_MAGIC_IMAGES, _MAGIC_LABELS):
        raise IdxFormatError(f"{name}: not a uint8 IDX file (magic 0x{magic:08x})")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    dims = struct.unpack(">" + "I" * ndim, raw[4:header])
    expected = int(np.prod(dims))
    if len(raw) - header != expected:
        raise IdxFormatError(
            f"{name}: header says shape {dims} ({expected} bytes) but file holds {len(raw) - header} bytes"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def encode_idx(array: np.ndarray) -> bytes:
    array = np.ascontiguousarray(array, dtype=np.uint8)
    magic = 0x00000800 | array.ndim
    return struct.pack(">I" + "I" * array.ndim, magic, *array.shape) + array.tobytes()


def read_raw(path: Path) -> bytes:
    """Uncompressed bytes of an IDX file, gzip or not; only from a regular file (a FIFO would block)."""
    from ..atomic import read_regular

    data = read_regular(path, "data file", IdxFormatError)
    return gunzip(data, str(path)) if data[:2] == b"\x1f\x8b" else data


MAX_IDX_BYTES = 256 * 2 ** 20  # the largest official file (train images) holds 47 MB: more is not MNIST-style data


def gunzip(data: bytes, name: str = "<bytes>", limit: int = MAX_IDX_BYTES) -> bytes:
    """Decompressed gzip bytes, at most ``limit`` of them: a small file that inflates to gigabytes is refused
    rather than allowed to fill the memory."""
    import io

    with gzip.GzipFile(fileobj=io.BytesIO(data)) as gz:
        out = gz.read(limit + 1)
    if len(out) > limit:
        raise IdxFormatError(f"{name}: decompresses to more than {limit} bytes; not an IDX data file")
    return out
