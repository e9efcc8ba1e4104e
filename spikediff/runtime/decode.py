"""Host-side encoding and decoding around the network, in numpy: what the sampler process does per window.

Everything the model does outside its NIR graph is here, driven by the graph's metadata: the time
features added as input planes, averaging of the readout over T, the readout's Lava order and the 4x4
patch layout. Arithmetic is in ``dtype``: float64 for the floating-point path (compared with the model run
in float64), float32 for fixed point (what the bit-exact simulator reproduces).
"""

from __future__ import annotations

import numpy as np

from ..export.nir_to_lava import from_lava_layout, to_lava_layout
from ..models.denoiser import time_features


def host_input(x: np.ndarray, t: int, time_dim: int, max_period: float, dtype="float32") -> np.ndarray:
    """Images x (N, C, H, W) at diffusion step t -> the network input (N, C + time_dim, H, W), NIR layout:
    the image channels, then the time features as constant planes (the same values PyTorch injects)."""
    x = np.asarray(x, dtype=dtype)
    n, _c, h, w = x.shape
    feats = time_features([t], time_dim, max_period)[0].astype(dtype)
    return np.concatenate([x, np.broadcast_to(feats[None, :, None, None], (n, time_dim, h, w))], axis=1)


def decoder_config(meta: dict, readout_nir_shape: tuple, readout_perm: np.ndarray | None, dtype: str) -> dict:
    """``Decoder`` arguments from a graph's metadata (``nir_graph.read_metadata``) and the readout's layout."""
    return dict(image_shape=tuple(int(d) for d in meta["image_shape"]), time_dim=int(meta["time_features"]),
                max_period=float(meta["max_period"]), readout_nir_shape=tuple(readout_nir_shape),
                readout_perm=readout_perm, readout_shape=tuple(int(d) for d in meta["readout_shape"]),
                patch=int(meta["patch"]), dtype=dtype)


class Decoder:
    def __init__(self, image_shape: tuple, time_dim: int, max_period: float, readout_nir_shape: tuple,
                 readout_perm: np.ndarray | None, readout_shape: tuple, patch: int, dtype: str = "float32"):
        self.dtype = np.dtype(dtype)
        self.image_shape = tuple(image_shape)
        self.time_dim, self.max_period = int(time_dim), float(max_period)
        self.readout_nir_shape, self.readout_perm = tuple(readout_nir_shape), readout_perm
        self.readout_shape, self.patch = tuple(readout_shape), int(patch)

    def input(self, x: np.ndarray, t: int) -> np.ndarray:
        """x (C, H, W) at step t -> the network input in Lava's (W, H, C) layout."""
        full = host_input(np.reshape(x, (1, *self.image_shape)), t, self.time_dim, self.max_period, self.dtype)[0]
        return to_lava_layout(full, full.shape)

    def output(self, mean_state: np.ndarray) -> np.ndarray:
        """Mean readout state in Lava order -> the model's prediction (C, H, W)."""
        return self.output_nir(from_lava_layout(np.asarray(mean_state, dtype=self.dtype), self.readout_nir_shape,
                                                self.readout_perm))

    def output_nir(self, mean_state: np.ndarray) -> np.ndarray:
        """Mean readout state(s) in NIR order (..., *readout NIR shape) -> prediction(s) (..., C, H, W)."""
        nir = np.asarray(mean_state, dtype=self.dtype)
        return unpatch(nir, nir.ndim - len(self.readout_nir_shape), self.readout_shape, self.patch)


def unpatch(state: np.ndarray, lead_dims: int, readout_shape: tuple, patch: int) -> np.ndarray:
    """Readout state(s) (*lead, flat or (C r r, H/r, W/r)) in NIR order -> images (*lead, C, H, W): the
    ``pixel_shuffle`` the PyTorch models apply to their readout."""
    r = int(patch)
    co, hq, wq = (int(d) for d in readout_shape)
    c = co // (r * r)
    lead = state.shape[:lead_dims]
    x = state.reshape(*lead, c, r, r, hq, wq)
    return np.moveaxis(x, (-5, -4, -3, -2, -1), (-5, -3, -1, -4, -2)).reshape(*lead, c, hq * r, wq * r)
