"""NIR layout <-> Lava layout, for every backend that talks to Lava or mirrors its order (no Lava import).

Lava's Conv works on (W, H, C) arrays with (C_out, kW, kH, C_in) kernels that it flips (Lava computes a true
convolution, PyTorch a correlation); NIR uses (C, H, W) and correlation. Image-shaped populations are
stored transposed; a flat population that receives flattened conv outputs keeps Lava's flatten order, and
dense weights into or out of it are permuted to match (``population_perms``).
"""

from __future__ import annotations

import numpy as np

from .plan import NirGraphError


def chw_to_whc_perm(shape: tuple) -> np.ndarray:
    """perm[i] = NIR flat index of the element at Lava flat index i, for a (C, H, W) array stored as (W, H, C)."""
    c, h, w = shape
    return np.arange(c * h * w).reshape(c, h, w).transpose(2, 1, 0).reshape(-1)


def lava_shape(shape: tuple) -> tuple:
    return tuple(reversed(shape)) if len(shape) == 3 else tuple(shape)


def to_lava_layout(arr, shape: tuple, perm: np.ndarray | None = None) -> np.ndarray:
    """A per-element array in NIR order (broadcast to ``shape``) -> the population's Lava layout."""
    arr = np.broadcast_to(np.asarray(arr, dtype=np.float64), shape)
    if len(shape) == 3:
        return arr.transpose(2, 1, 0).copy()
    return arr[perm].copy() if perm is not None else arr.copy()


def from_lava_layout(v: np.ndarray, shape: tuple, perm: np.ndarray | None = None) -> np.ndarray:
    """The inverse of ``to_lava_layout`` for arrays (..., *Lava shape) -> (..., *shape)."""
    if len(shape) == 3:
        return np.moveaxis(v, (-3, -2, -1), (-1, -2, -3))
    if perm is None:
        return v
    out = np.empty_like(v)
    out[..., perm] = v
    return out


def conv_weight_to_lava(w: np.ndarray) -> np.ndarray:
    """(C_out, C_in, kH, kW) correlation kernel -> Lava's (C_out, kW, kH, C_in) convolution kernel."""
    return np.ascontiguousarray(w.transpose(0, 3, 2, 1)[:, ::-1, ::-1])


def population_perms(folded) -> dict:
    """Lava order of each flat population fed by flattened convs: Lava's flatten order of that conv's output
    (perm[i] = NIR index at Lava index i); None where Lava keeps NIR's order or the shape is an image."""
    p = folded.plan
    perm: dict = {}
    for name in p.populations:
        feeds = {f.syn.name: f for f in folded.incoming(name) if f.syn.flat_out}
        perms = {tuple(chw_to_whc_perm(f.op.out_shape(f.src_shape))) for f in feeds.values()}
        if len(perms) > 1:
            raise NirGraphError(f"NIR node {name!r}: flattened conv inputs of different shapes "
                                f"({', '.join(feeds)}); Lava cannot order them consistently")
        perm[name] = np.array(perms.pop()) if perms else None
    return perm


def dense_rows_cols(f, perms: dict, shapes: dict) -> tuple:
    """(rows, cols) that put a dense synapse's NIR-ordered weights into Lava order: columns in the source's
    Lava order, rows in the destination's (an image destination receives the output reshaped C-order to
    (W, H, C), so its rows follow ``chw_to_whc_perm``)."""
    src, dst = f.syn.src, f.syn.dst
    src_shape, dst_shape = shapes[src], shapes[dst]
    if len(src_shape) == 3:
        cols = chw_to_whc_perm(src_shape)
    else:
        cols = perms.get(src) if perms.get(src) is not None else np.arange(f.weight.shape[1])
    if len(dst_shape) == 3:
        rows = chw_to_whc_perm(dst_shape)
    else:
        rows = perms[dst] if perms.get(dst) is not None else np.arange(f.weight.shape[0])
    return rows, cols
