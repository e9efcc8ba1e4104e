"""Host-side encoding and decoding around the network, in numpy: what the sampler process does per window.

Everything the model does outside its NIR graph is here, driven by the graph's metadata: the time
features added as input planes, averaging of the readout over T, the readout's Lava order and the 4x4
patch layout. Arithmetic is float32, as in PyTorch, so the Lava run sees the same inputs bit for bit.
"""

from __future__ import annotations

import numpy as np


def time_features(t: int, dim: int, max_period: float) -> np.ndarray:
    """The model's sinusoidal features of one diffusion step (float64 maths, float32 result, as in torch)."""
    half = dim // 2
    freqs = np.exp(-np.log(max_period) * np.arange(half, dtype=np.float64) / half)
    angles = float(t) * freqs
    return np.concatenate([np.sin(angles), np.cos(angles)]).astype(np.float32)


class Decoder:
    def __init__(self, image_shape: tuple, time_dim: int, max_period: float, readout_shape: tuple, patch: int,
                 readout_perm: np.ndarray | None):
        self.image_shape = tuple(image_shape)
        self.time_dim, self.max_period = int(time_dim), float(max_period)
        self.readout_shape, self.patch = tuple(readout_shape), int(patch)
        self.readout_perm = None if readout_perm is None else np.asarray(readout_perm)

    def input(self, x: np.ndarray, t: int) -> np.ndarray:
        """x (C, H, W) at step t -> the network input in Lava's (W, H, C) layout."""
        c, h, w = self.image_shape
        planes = np.broadcast_to(time_features(t, self.time_dim, self.max_period)[:, None, None], (self.time_dim, h, w))
        full = np.concatenate([np.asarray(x, dtype=np.float32).reshape(c, h, w), planes])
        return full.transpose(2, 1, 0).astype(np.float64)

    def output(self, mean_state: np.ndarray) -> np.ndarray:
        """Mean readout state in Lava order -> the model's prediction (C, H, W), float32."""
        flat = np.asarray(mean_state, dtype=np.float32).reshape(-1)
        if self.readout_perm is not None:
            nir_flat = np.empty_like(flat)
            nir_flat[self.readout_perm] = flat
        elif len(self.readout_shape) == 3:
            nir_flat = np.asarray(mean_state, dtype=np.float32).transpose(2, 1, 0).reshape(-1)
        else:
            nir_flat = flat
        r = self.patch
        co, hq, wq = self.readout_shape
        c = co // (r * r)
        return nir_flat.reshape(c, r, r, hq, wq).transpose(0, 3, 1, 4, 2).reshape(c, hq * r, wq * r)
