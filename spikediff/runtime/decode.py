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
        _c, h, w = self.image_shape
        feats = time_features([t], self.time_dim, self.max_period)[0]
        planes = np.broadcast_to(feats[:, None, None], (self.time_dim, h, w))
        full = np.concatenate([np.asarray(x, dtype=self.dtype).reshape(self.image_shape), planes.astype(self.dtype)])
        return to_lava_layout(full, full.shape)

    def output(self, mean_state: np.ndarray) -> np.ndarray:
        """Mean readout state in Lava order -> the model's prediction (C, H, W)."""
        nir = from_lava_layout(np.asarray(mean_state, dtype=self.dtype), self.readout_nir_shape, self.readout_perm)
        r = self.patch
        co, hq, wq = self.readout_shape
        c = co // (r * r)
        return nir.reshape(c, r, r, hq, wq).transpose(0, 3, 1, 4, 2).reshape(c, hq * r, wq * r)
