"""Convolutions derived for space-to-depth layouts, run in their natural form by the bit-exact simulator.

A spiking U-Net's exact deployable form holds its decoder maps in space-to-depth (s2d) layout, and each synapse
between them is one Conv2d whose kernel is derived from a natural k x k kernel (``models.s2d``): each output
phase holds its own copy of the taps it reads and zeros elsewhere, (r_in r_out)^2 times the natural kernel's
entries. Lava and a chip run the derived form (a chip stores only the nonzero synapses); a dense convolution
multiplies every zero, and on those layers the simulator spent most of a U-Net's time.

The exporter marks such a Conv2d node with ``metadata["s2d"]`` (``S2DGeometry``: the layouts' factors, the
natural kernel size, stride and nearest up-sampling). The simulator reads the natural integer kernel back out of
the derived one and uses it only where deriving it again gives the derived kernel exactly (``natural_kernel``):
then pixel shuffle, up-sample, convolve and unshuffle sum the same integer products, so the result is the same to
the bit (float32 is exact for the simulator's integer partial sums, see ``export.simulator``). A derived kernel
that no natural one explains (an up-sampling that merged two taps which quantization then rounded apart, or a
hand-edited file) runs dense, as any other convolution. ``benchmarks/unet_simulator.py`` measures the gain.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .. import SpikediffError
from ..models.s2d import axis_taps, placement

KEYS = ("r_in", "r_out", "kernel", "stride", "upsample")


@dataclass(frozen=True)
class S2DGeometry:
    """One natural operation (nearest up-sampling by ``upsample``, a ``kernel`` x ``kernel`` convolution of
    ``stride``, padding kernel // 2) between maps held with s2d factors ``r_in`` and ``r_out``."""

    r_in: int
    r_out: int
    kernel: int
    stride: int = 1
    upsample: int = 1

    def __post_init__(self):
        for key in KEYS:
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise SpikediffError(f"s2d geometry: {key} must be a positive integer, got {value!r}")
        axis_taps(self.r_in, self.r_out, self.kernel, self.stride, self.upsample)  # the layouts must fit

    @classmethod
    def from_metadata(cls, meta) -> S2DGeometry:
        if not isinstance(meta, dict) or set(meta) != set(KEYS):
            raise SpikediffError(f"s2d metadata must be a table of {', '.join(KEYS)}, got {meta!r}")
        # a NIR file gives numbers back as numpy scalars or one-element arrays; anything else is refused below
        return cls(**{k: v.item() if isinstance(v, (np.generic, np.ndarray)) and np.size(v) == 1 else v
                      for k, v in meta.items()})

    def to_metadata(self) -> dict:
        return {k: int(v) for k, v in asdict(self).items()}

    def derived_conv(self) -> tuple:
        """(coarse stride, padding, kernel size) of the derived Conv2d."""
        return axis_taps(self.r_in, self.r_out, self.kernel, self.stride, self.upsample)[:3]

    def mismatch(self, weight_shape: tuple, stride: tuple, padding: tuple, dilation: tuple, groups: int) -> str:
        """Why a Conv2d of these parameters is not this geometry's derived form ('' if it is)."""
        s, pad, size = self.derived_conv()
        c_out, c_in = weight_shape[:2]
        if groups != 1 or tuple(dilation) != (1, 1):
            return "it is grouped or dilated"
        if tuple(weight_shape[2:]) != (size, size) or tuple(stride) != (s, s) or tuple(padding) != (pad, pad):
            return (f"it derives a {size} x {size} kernel of stride {s} and padding {pad}, the node has "
                    f"{tuple(weight_shape[2:])}, stride {tuple(stride)}, padding {tuple(padding)}")
        if c_out % self.r_out ** 2 or c_in % self.r_in ** 2:
            return f"{c_out} x {c_in} channels are not multiples of {self.r_out ** 2} x {self.r_in ** 2} phases"
        return ""


def _derive(natural: np.ndarray, a: np.ndarray, g: S2DGeometry) -> np.ndarray:
    c_out, c_in = natural.shape[:2]
    big = np.einsum("oiab,pqya,PQxb->opPiqQyx", natural, a, a, optimize=True)
    return big.reshape(c_out * g.r_out ** 2, c_in * g.r_in ** 2, a.shape[2], a.shape[2])


def natural_kernel(weight: np.ndarray, g: S2DGeometry) -> np.ndarray | None:
    """The natural (C_out, C_in, k, k) kernel from which ``weight`` derives exactly, or None if none does.

    Each natural tap is read where it lands alone (on an output phase, input phase and derived tap no other tap
    reaches); an up-sampling can leave a tap with no such place, and then there is no natural form to use."""
    _s, _pad, a = placement(g.r_in, g.r_out, g.kernel, g.stride, g.upsample, dtype=torch.float64)
    a = a.numpy()
    alone = {}  # natural tap j -> (p, q, kk) where it lands alone
    for p, q, kk in zip(*np.nonzero(a.sum(3) == 1)):
        j = int(np.argmax(a[p, q, kk]))
        if a[p, q, kk, j] == 1:
            alone.setdefault(j, (p, q, kk))
    if len(alone) < g.kernel:
        return None
    ro, ri = g.r_out, g.r_in
    w = np.asarray(weight, dtype=np.float64)
    w6 = w.reshape(w.shape[0] // ro ** 2, ro, ro, w.shape[1] // ri ** 2, ri, ri, *w.shape[2:])
    natural = np.empty((w6.shape[0], w6.shape[3], g.kernel, g.kernel))
    for jy in range(g.kernel):
        py, qy, ky = alone[jy]
        for jx in range(g.kernel):
            px, qx, kx = alone[jx]
            natural[:, :, jy, jx] = w6[:, py, px, :, qy, qx, ky, kx]
    return natural if np.array_equal(_derive(natural, a, g), w) else None


@dataclass(frozen=True)
class NaturalConv:
    """A derived convolution computed the natural way: shuffle, up-sample, convolve, unshuffle."""

    weight: torch.Tensor  # the natural kernel
    geometry: S2DGeometry

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        g = self.geometry
        if g.r_in > 1:
            x = F.pixel_shuffle(x, g.r_in)
        if g.upsample > 1:
            x = F.interpolate(x, scale_factor=g.upsample, mode="nearest")
        y = F.conv2d(x, self.weight, None, g.stride, g.kernel // 2)
        return F.pixel_unshuffle(y, g.r_out) if g.r_out > 1 else y
