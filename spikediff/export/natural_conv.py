"""Convolutions derived for space-to-depth layouts, run in their natural form by the bit-exact simulator.

A spiking U-Net's exact deployable form holds its decoder maps in space-to-depth (s2d) layout, and each synapse
between them is one Conv2d whose kernel is derived from a natural k x k kernel (``models.s2d``): each output
phase holds its own copy of the taps it reads and zeros elsewhere, (r_in r_out)^2 times the natural kernel's
entries. Lava and a chip run the derived form (a chip stores only the nonzero synapses; Lava's float path runs a
compact graph's kernels the natural way, ``runtime.lava_processes.Conv64``); a dense convolution multiplies every
zero, and on those layers the simulator spent most of a U-Net's time.

The exporter marks such a Conv2d node with ``metadata["s2d"]`` (``models.s2d.S2DGeometry``: the layouts' factors, the
natural kernel size, stride and nearest up-sampling). The simulator reads the natural integer kernel back out of
the derived one and uses it only where deriving it again gives the derived kernel exactly (``natural_kernel``):
then pixel shuffle, up-sample, convolve and unshuffle sum the same integer products, so the result is the same to
the bit (float32 is exact for the simulator's integer partial sums, see ``export.simulator``).

An up-sampling's derived kernel has no natural one: nearest up-sampling lands two fine taps on one coarse pixel,
and the derived kernel holds their sum, quantized as one weight. Such a kernel runs phase by phase
(``phase_split``): for each output phase and input phase, one small convolution over only the derived taps the
geometry lets them share, so the structural zeros are skipped and every remaining product is one the dense
convolution makes (the same integers, exact). A kernel with a weight where the geometry has a zero (a hand-edited
file) runs dense, as any other convolution. ``benchmarks/unet_simulator.py`` measures the gain.

A compact graph compiled to fixed point holds each such kernel as its merged taps (``models.s2d.MergedKernel``:
every dense weight is one of them, so quantizing them quantizes the dense kernel) and never makes it dense, which
is what lets the paper's width compile; ``MergedConv`` runs it on the natural maps, one convolution whose output
channels are the up-sampled grid's parities. The float model the bias correction measures against runs merged
taps too, read out of a dense kernel where the graph came dense (``merged_kernel``): the same values, so the same
sums, from either form.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..models.s2d import MergedKernel, S2DGeometry, expand_kernel, parity_taps, placement

__all__ = ["MergedConv", "NaturalConv", "PhaseSplitConv", "S2DGeometry", "merged_kernel", "natural_kernel", "phase_split"]


def natural_kernel(weight: np.ndarray, g: S2DGeometry) -> np.ndarray | None:
    """The natural (C_out, C_in, k, k) kernel from which ``weight`` derives exactly, or None if none does.

    Each natural tap is read where it lands alone (on an output phase, input phase and derived tap no other tap
    reaches); an up-sampling can leave a tap with no such place, and then there is no natural form to use."""
    a = placement(g.r_in, g.r_out, g.kernel, g.stride, g.upsample, dtype=torch.float64)[2].numpy()
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
    again = expand_kernel(torch.from_numpy(natural), torch.from_numpy(a), g.r_in, g.r_out).numpy()
    return natural if np.array_equal(again, w) else None


def merged_kernel(weight: np.ndarray, g: S2DGeometry) -> MergedKernel | None:
    """The merged taps (``models.s2d.MergedKernel``) whose dense array ``weight`` is exactly, or None if it has none
    (a geometry without a merged form, or a weight where the form has a zero or two copies of one tap differ).
    Each merged tap is read where the dense kernel holds it, so the values are the dense kernel's own."""
    taps = parity_taps(g)
    if taps is None:
        return None
    w = np.asarray(weight)
    up, n_d = taps[1].shape[:2]
    probe = MergedKernel(np.zeros((1, 1, up, up, n_d, n_d)), g)
    if w.ndim != 4 or w.shape[0] % g.r_out ** 2 or w.shape[1] % g.r_in ** 2 or w.shape[2:] != probe.shape[2:]:
        return None
    idx = probe.index()
    where = {}  # flat merged tap per axis -> (output phase, input phase, derived tap) holding it
    for p, q, kk in zip(*np.nonzero(idx >= 0)):
        where.setdefault(int(idx[p, q, kk]), (p, q, kk))
    ro, ri = g.r_out, g.r_in
    w8 = w.reshape(w.shape[0] // ro ** 2, ro, ro, w.shape[1] // ri ** 2, ri, ri, *w.shape[2:])
    values = np.zeros((w8.shape[0], w8.shape[3], up * n_d, up * n_d), w.dtype)
    for a, (py, qy, ky) in where.items():
        for b, (px, qx, kx) in where.items():
            values[:, :, a, b] = w8[:, py, px, :, qy, qx, ky, kx]
    values = values.reshape(*values.shape[:2], up, n_d, up, n_d).transpose(0, 1, 2, 4, 3, 5)
    merged = MergedKernel(np.ascontiguousarray(values), g)
    return merged if np.array_equal(np.asarray(merged), w) else None


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


@dataclass(frozen=True)
class MergedConv:
    """A derived convolution computed from its merged taps (``models.s2d.MergedKernel``) on the natural maps: shuffle,
    one convolution whose output channels are (channel, parity y, parity x) of the up-sampled grid, shuffle again
    to interleave the parities, unshuffle. Its products are the dense convolution's nonzero ones (plus the merged
    form's own zeros, the offsets a parity does not read): the same integers, exact (``export.simulator``).
    Without up-sampling the merged taps are the natural kernel, and this is ``NaturalConv``."""

    weight: torch.Tensor  # (C_out, C_in, U, U, D, D) merged taps
    geometry: S2DGeometry
    d_lo: int

    @classmethod
    def of(cls, kernel: MergedKernel, dtype=torch.float64, device="cpu") -> MergedConv:
        return cls(torch.as_tensor(np.ascontiguousarray(kernel.values), dtype=dtype, device=device), kernel.geometry,
                   kernel.d_lo)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        g, w = self.geometry, self.weight
        co, ci, up, _, n_d, _ = w.shape
        if up == 1:
            return NaturalConv(w[:, :, 0, 0], g)(x)
        if g.r_in > 1:
            x = F.pixel_shuffle(x, g.r_in)
        lo, hi = -self.d_lo, n_d - 1 + self.d_lo
        y = F.conv2d(F.pad(x, (lo, hi, lo, hi)), w.permute(0, 2, 3, 1, 4, 5).reshape(co * up * up, ci, n_d, n_d))
        y = F.pixel_shuffle(y, up)
        return F.pixel_unshuffle(y, g.r_out) if g.r_out > 1 else y

    def transpose(self, t: torch.Tensor, in_shape: tuple) -> torch.Tensor:
        """The transposed operation (the gradient with respect to an input of ``in_shape``, (C_in r_in^2, H, W)) for
        targets ``t`` (N, C_out r_out^2, H', W'): each step of ``__call__`` undone in reverse, the convolution by
        its input gradient. What the cost model pulls back through a kernel (fan-out, which sources feed a core)."""
        g, w = self.geometry, self.weight
        co, ci, up, _, n_d, _ = w.shape
        n, (h, wd) = len(t), (in_shape[1] * g.r_in, in_shape[2] * g.r_in)  # the natural input map
        if g.r_out > 1:
            t = F.pixel_shuffle(t, g.r_out)
        if up == 1:
            x = torch.nn.grad.conv2d_input((n, ci, h, wd), w[:, :, 0, 0], t, g.stride, g.kernel // 2)
        else:
            lo = -self.d_lo
            kernel = w.permute(0, 2, 3, 1, 4, 5).reshape(co * up * up, ci, n_d, n_d)
            x = torch.nn.grad.conv2d_input((n, ci, h + n_d - 1, wd + n_d - 1), kernel, F.pixel_unshuffle(t, up))
            x = x[:, :, lo:lo + h, lo:lo + wd]
        return F.pixel_unshuffle(x, g.r_in) if g.r_in > 1 else x


@dataclass(frozen=True)
class PhaseSplitConv:
    """A derived convolution computed one (output phase, input phase) pair at a time, each over the bounding box
    of the derived taps the pair can share: the dense convolution's nonzero products, without its zeros."""

    parts: tuple  # (py, px, qy, qx, ky0, kx0, kernel (C_out, C_in, kh, kw)) per pair that shares a tap
    channels: tuple  # (C_out, C_in) of the natural maps
    geometry: S2DGeometry
    stride: int
    padding: tuple  # the derived convolution's (rows, columns)
    size: int  # the derived kernel's side

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        g, (c_out, c_in), (ph, pw) = self.geometry, self.channels, self.padding
        n, _, h, w = x.shape
        h_out = (h + 2 * ph - self.size) // self.stride + 1
        w_out = (w + 2 * pw - self.size) // self.stride + 1
        xp = F.pad(x, (pw, pw, ph, ph)).reshape(n, c_in, g.r_in, g.r_in, h + 2 * ph, w + 2 * pw)
        out = x.new_zeros(n, c_out, g.r_out, g.r_out, h_out, w_out)
        for py, px, qy, qx, ky0, kx0, kernel in self.parts:
            y = F.conv2d(xp[:, :, qy, qx, ky0:, kx0:], kernel, None, self.stride)
            out[:, :, py, px] += y[:, :, :h_out, :w_out]
        return out.reshape(n, c_out * g.r_out ** 2, h_out, w_out)


def phase_split(weight, g: S2DGeometry, stride, padding, dtype=torch.float64, device="cpu") -> PhaseSplitConv | None:
    """``weight`` (a derived kernel of geometry ``g``) as a ``PhaseSplitConv``, or None if it has a nonzero
    weight where the geometry has none (then only the dense convolution computes what it says)."""
    stride, padding = np.broadcast_to(np.asarray(stride), 2), np.broadcast_to(np.asarray(padding), 2)
    if stride[0] != stride[1]:
        return None
    a = placement(g.r_in, g.r_out, g.kernel, g.stride, g.upsample, dtype=torch.float64)[2].numpy()
    reach = a.sum(3) > 0  # (output phase, input phase, derived tap) per axis: may a natural tap land there
    ro, ri, size = reach.shape
    w = np.asarray(weight, dtype=np.float64)
    if w.ndim != 4 or w.shape[2:] != (size, size) or w.shape[0] % ro ** 2 or w.shape[1] % ri ** 2:
        return None
    w6 = w.reshape(w.shape[0] // ro ** 2, ro, ro, w.shape[1] // ri ** 2, ri, ri, size, size)
    allowed = reach[:, None, :, None, :, None] & reach[None, :, None, :, None, :]  # (py, px, qy, qx, ky, kx)
    if np.any(w6.transpose(1, 2, 4, 5, 6, 7, 0, 3)[~allowed]):
        return None
    parts = []
    for py in range(ro):
        for px in range(ro):
            for qy in range(ri):
                for qx in range(ri):
                    ys, xs = np.flatnonzero(reach[py, qy]), np.flatnonzero(reach[px, qx])
                    if len(ys) and len(xs):
                        box = w6[:, py, px, :, qy, qx, ys[0]:ys[-1] + 1, xs[0]:xs[-1] + 1]
                        parts.append((py, px, qy, qx, int(ys[0]), int(xs[0]),
                                      torch.as_tensor(np.ascontiguousarray(box), dtype=dtype, device=device)))
    return PhaseSplitConv(tuple(parts), (w6.shape[0], w6.shape[3]), g, int(stride[0]),
                          (int(padding[0]), int(padding[1])), size)
