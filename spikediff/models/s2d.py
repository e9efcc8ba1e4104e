"""Synapses between feature maps held in space-to-depth (s2d) layout: trained on natural kernels, exported as
one plain ``Conv2d`` each.

A map of C channels at resolution r G x r G can be held as C r^2 channels on a G x G grid (``pixel_unshuffle``
order: channel c, then the phase (py, px) inside each r x r cell). That is only an order of neurons, but it lets
a decoder up-sample with convolutions: NIR and Lava have no up-sampling or transposed convolution, and a
Conv2d never yields a finer grid than it reads, so a map computed from a 4 x 4 bottleneck must stay on a grid
of at most 4 x 4, finer content held in its channels (the factor r of every decoder map of a U-Net is
2^(number of up-samplings behind it)).

Every synapse here is one *natural* operation on natural-layout maps, an optional nearest up-sampling by
``upsample`` followed by a k x k convolution of stride ``stride`` (and optional batch norm), read from a map held
with factor ``r_in`` and written to one held with factor ``r_out``. ``forward`` computes it the natural way
(pixel shuffle, up-sample, convolve, pixel unshuffle), which is what training runs and is as cheap as the
natural network; ``fused()`` gives the one Conv2d that computes the same on the s2d layouts, what export and
the compiler see. Its weight is derived from the natural kernel by index arithmetic, one axis at a time: output
phase p of a cell at Y reads natural tap j at fine input position e = floor((stride p + j - k // 2) / upsample)
relative to the cell, i.e. coarse offset floor(e / r_in) and input phase e mod r_in; the coarse stride is
stride r_out / (upsample r_in). A derived kernel holds, for each output phase, its own copy of the taps that
phase uses and zeros for the others: (r_in r_out)^2 times the natural kernel's entries for a convolution between
two maps of factor r. A Loihi-class chip stores every position's synapses anyway (no zeros), so the synapses that
count are the natural network's; the compiler and Lava, which hold dense kernels, pay the difference, except from a
compact graph (``DerivedKernel``: the natural kernel standing in for the derived one; in Loihi fixed point its
merged taps, ``MergedKernel``, since an up-sampling's dense weight is a sum of natural taps rounded as one).

A synapse from a *spatially constant* map (the time branch) writes the same current into every phase:
``constant_source`` (exact because its source does not vary across the grid, which the U-Net's tests check).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import SpikediffError


def axis_taps(r_in: int, r_out: int, k: int, stride: int = 1, upsample: int = 1, pad: int | None = None) -> tuple:
    """Per axis, the derived convolution's (coarse stride, padding, kernel size) and its taps: a list of
    (output phase p, input phase q, derived tap kk, natural tap j)."""
    c = k // 2 if pad is None else pad
    num = stride * r_out
    if num % (upsample * r_in):
        raise SpikediffError(f"no convolution reads a map of factor {r_in} into one of factor {r_out} through "
                             f"stride {stride} and up-sampling {upsample}: the output grid would be finer")
    s = num // (upsample * r_in)
    raw = []
    for p in range(r_out):
        for j in range(k):
            e = (stride * p + j - c) // upsample  # floor division: fine input position relative to the cell
            raw.append((p, e % r_in, e // r_in, j))
    lo, hi = min(t[2] for t in raw), max(t[2] for t in raw)
    padding = max(-lo, hi + 1 - s, 0)
    size = max(hi + padding + 1, 2 * padding + 1)
    return s, padding, size, [(p, q, d + padding, j) for p, q, d, j in raw]


def placement(r_in: int, r_out: int, k: int, stride: int = 1, upsample: int = 1, pad: int | None = None,
              dtype=torch.float32) -> tuple:
    """(coarse stride, padding, A) with A[p, q, kk, j] the number of times natural tap j lands on derived tap kk
    between output phase p and input phase q (up-sampling lands two fine taps on one coarse pixel)."""
    s, padding, size, taps = axis_taps(r_in, r_out, k, stride, upsample, pad)
    a = torch.zeros(r_out, r_in, size, k, dtype=dtype)
    for p, q, kk, j in taps:
        a[p, q, kk, j] += 1
    return s, padding, a


def expand_kernel(w: torch.Tensor, a: torch.Tensor, r_in: int, r_out: int) -> torch.Tensor:
    """The derived (C_out r_out^2, C_in r_in^2, size, size) kernel of a natural (C_out, C_in, k, k) one through
    the per-axis ``placement`` A (differentiable in w)."""
    # W[o, py, px, i, qy, qx, ky, kx] = sum_{jy, jx} w[o, i, jy, jx] A[py, qy, ky, jy] A[px, qx, kx, jx]
    big = torch.einsum("oiab,pqya,PQxb->opPiqQyx", w, a, a)
    size = a.shape[2]
    return big.reshape(w.shape[0] * r_out ** 2, w.shape[1] * r_in ** 2, size, size)


GEOMETRY_KEYS = ("r_in", "r_out", "kernel", "stride", "upsample")


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
        for key in GEOMETRY_KEYS:
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise SpikediffError(f"s2d geometry: {key} must be a positive integer, got {value!r}")
        axis_taps(self.r_in, self.r_out, self.kernel, self.stride, self.upsample)  # the layouts must fit

    @classmethod
    def from_metadata(cls, meta) -> S2DGeometry:
        if not isinstance(meta, dict) or set(meta) != set(GEOMETRY_KEYS):
            raise SpikediffError(f"s2d metadata must be a table of {', '.join(GEOMETRY_KEYS)}, got {meta!r}")
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


class _HeldKernel:
    """What a compact derived kernel answers about the dense array it stands for: shape, dtype, size (its subclasses
    hold ``held``, an array whose first two axes are the natural (C_out, C_in), and a ``geometry``)."""

    __slots__ = ()
    ndim = 4

    @property
    def shape(self) -> tuple:
        size = self.geometry.derived_conv()[2]
        co, ci = self.held.shape[:2]
        return (co * self.geometry.r_out ** 2, ci * self.geometry.r_in ** 2, size, size)

    @property
    def dtype(self):
        return self.held.dtype

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


class DerivedKernel(_HeldKernel):
    """A derived kernel held as its natural one: the dense (C_out r_out^2, C_in r_in^2, size, size) kernel's
    shape and dtype, and its values on request (``np.asarray``), without storing it.

    At the paper's width the dense derived kernels of a U-Net hold 6 G entries (49 GB in float64) where the
    natural ones hold 51 M, so the compiler and Lava's float path take this form (``to_nir(..., compact=True)``)
    and compute the natural way (``export.natural_conv.NaturalConv``). Whatever asks for the array gets the
    dense kernel, exactly ``S2DSynapse.fused``'s, as large as it is: small networks work the same in both forms.
    Not a dataclass on purpose: ``dataclasses.asdict`` (NIR's serializer) would take it apart.
    """

    __slots__ = ("natural", "geometry")

    def __init__(self, natural: np.ndarray, geometry: S2DGeometry):
        natural = np.asarray(natural)
        if natural.ndim != 4 or natural.shape[2:] != (geometry.kernel, geometry.kernel):
            raise SpikediffError(f"a derived kernel of geometry {geometry.to_metadata()} needs a natural "
                                 f"(C_out, C_in, {geometry.kernel}, {geometry.kernel}) kernel, got {natural.shape}")
        self.natural, self.geometry = natural, geometry

    @property
    def held(self) -> np.ndarray:
        return self.natural

    def __array__(self, dtype=None, copy=None):
        g = self.geometry
        w = torch.from_numpy(np.ascontiguousarray(self.natural))
        a = placement(g.r_in, g.r_out, g.kernel, g.stride, g.upsample, dtype=w.dtype)[2]
        dense = expand_kernel(w, a, g.r_in, g.r_out).numpy()
        return dense if dtype is None else dense.astype(dtype)

    def scaled(self, per_out: np.ndarray):
        """The kernel with output channel c (derived order) times ``per_out[c]``: still compact when every phase
        of a natural channel has one factor, else the dense array."""
        per_out = np.asarray(per_out, dtype=np.float64).reshape(-1)
        by_phase = per_out.reshape(self.natural.shape[0], -1)
        if np.ptp(by_phase, axis=1).max(initial=0) > 0:
            return np.asarray(self, dtype=np.float64) * per_out.reshape(-1, 1, 1, 1)
        return DerivedKernel(self.natural.astype(np.float64) * by_phase[:, :1, None, None], self.geometry)

    def merged(self) -> MergedKernel | None:
        """The same dense kernel as merged taps (``MergedKernel``), None where the geometry has no merged form.
        Each merged tap is summed over the natural taps one axis at a time, in the natural kernel's dtype, as
        ``expand_kernel`` sums a dense weight (at most two terms an axis, so the order cannot differ): the dense
        arrays of both forms are equal bit for bit."""
        taps = parity_taps(self.geometry)
        if taps is None:
            return None
        t = torch.from_numpy(taps[1]).to(torch.from_numpy(self.natural).dtype)
        w = torch.from_numpy(np.ascontiguousarray(self.natural))
        rows = torch.einsum("oiab,uya->oibuy", w, t)  # y axis first, as expand_kernel contracts
        values = torch.einsum("oibuy,vxb->oiuvyx", rows, t)
        return MergedKernel(values.numpy(), self.geometry)

    def __repr__(self) -> str:
        return f"DerivedKernel(natural {self.natural.shape}, {self.geometry.to_metadata()}, derived {self.shape})"


def parity_taps(g: S2DGeometry) -> tuple | None:
    """Per axis, (lowest offset, T) with T[u, d, j] = 1 where natural tap j reads, for a fine output whose place on
    the up-sampled grid has parity u, the fine input at offset d (from d_lo) of that place divided by
    ``upsample``: every natural tap that lands there is summed into one *merged* tap (u, d). Without up-sampling
    the merged taps are the natural ones. None where some merged tap sums more than two natural ones (a kernel of
    5 or more up-sampled) or the up-sampling is strided: the merged form is made only where it is bit for bit
    the dense kernel's (``DerivedKernel.merged``)."""
    c, up = g.kernel // 2, g.upsample
    if up > 1 and g.stride != 1:
        return None
    d = {(u, j): (u + j - c) // up for u in range(up) for j in range(g.kernel)}
    d_lo = min(d.values())
    t = np.zeros((up, max(d.values()) - d_lo + 1, g.kernel))
    for (u, j), dd in d.items():
        t[u, dd - d_lo, j] = 1
    if t.sum(2).max() > 2:
        return None
    return d_lo, t


class MergedKernel(_HeldKernel):
    """A derived kernel held as its merged taps: values (C_out, C_in, U, U, D, D), U = ``upsample`` parities and D
    merged offsets per axis (``parity_taps``), the dense (C_out r_out^2, C_in r_in^2, size, size) kernel's shape
    and dtype, and its values on request (``np.asarray``).

    Why: Loihi fixed point rounds the dense derived kernel weight by weight, and an up-sampling's dense weight
    is the sum of the natural taps that land on one coarse pixel, which no integer natural kernel reproduces.
    Every nonzero dense weight is one merged tap, so quantizing the merged taps quantizes the dense kernel
    exactly (``map``), at 16 values per natural 9 for a 3 x 3 up-sampling and the natural kernel itself
    otherwise; ``export.natural_conv.MergedConv`` computes it on the natural maps.
    """

    __slots__ = ("values", "geometry", "d_lo", "_index", "_flat_values", "_running")

    def __init__(self, values: np.ndarray, geometry: S2DGeometry):
        taps = parity_taps(geometry)
        if taps is None:
            raise SpikediffError(f"s2d geometry {geometry.to_metadata()} has no merged form")
        self.d_lo, t = taps
        values = np.asarray(values)
        up, n_d = t.shape[:2]
        if values.ndim != 6 or values.shape[2:] != (up, up, n_d, n_d):
            raise SpikediffError(f"merged taps of geometry {geometry.to_metadata()} are (C_out, C_in, {up}, {up}, "
                                 f"{n_d}, {n_d}), got {values.shape}")
        self.values, self.geometry, self._index, self._flat_values = values, geometry, None, None
        self._running = None

    @property
    def held(self) -> np.ndarray:
        return self.values

    def index(self) -> np.ndarray:
        """Per axis, [output phase, input phase, derived tap] -> flat merged tap u * D + d, or -1 (a structural
        zero)."""
        if self._index is None:
            g = self.geometry
            s, _pad, size, taps = axis_taps(g.r_in, g.r_out, g.kernel, g.stride, g.upsample)
            n_d = self.values.shape[-1]
            index = np.full((g.r_out, g.r_in, size), -1)
            for p, q, kk, j in taps:
                u = (g.stride * p) % g.upsample
                index[p, q, kk] = u * n_d + (u + j - g.kernel // 2) // g.upsample - self.d_lo
            self._index = index
        return self._index

    def multiplicity(self) -> np.ndarray:
        """(U D, U D): how many dense weights of one (output channel, input channel) pair each merged tap is."""
        per_axis = np.bincount(self.index()[self.index() >= 0], minlength=self.values.shape[2] * self.values.shape[4])
        return np.outer(per_axis, per_axis)

    def _flat(self, values=None) -> np.ndarray:
        """(C_out, C_in, U D, U D): the taps by flat index per axis (this kernel's own values kept once made: the
        mapper asks for rows of one kernel many times)."""
        if values is None and self._flat_values is not None:
            return self._flat_values
        v = self.values if values is None else values
        co, ci, up, _, n_d, _ = v.shape
        flat = v.transpose(0, 1, 2, 4, 3, 5).reshape(co, ci, up * n_d, up * n_d)
        if values is None:
            self._flat_values = flat
        return flat

    def __array__(self, dtype=None, copy=None):
        g, idx = self.geometry, self.index()
        flat = self._flat()
        padded = np.zeros(flat.shape[:2] + (flat.shape[2] + 1,) * 2, flat.dtype)
        padded[:, :, :-1, :-1] = flat  # index -1 reads the zero in the last row and column
        iy = idx.reshape(g.r_out, 1, g.r_in, 1, idx.shape[2], 1)
        ix = idx.reshape(1, g.r_out, 1, g.r_in, 1, idx.shape[2])
        dense = padded[:, :, iy, ix]  # (C_out, C_in, py, px, qy, qx, ky, kx)
        dense = dense.transpose(0, 2, 3, 1, 4, 5, 6, 7).reshape(self.shape)
        return dense if dtype is None else dense.astype(dtype)

    def blocks(self, entries: int = 1 << 22):
        """The dense array in consecutive blocks of whole output channels (about ``entries`` each, in C order):
        for what must read every dense weight (a digest) of a kernel too large to be dense at once."""
        per_natural = self.size // max(1, self.values.shape[0])
        step = max(1, entries // max(1, per_natural))
        for o in range(0, self.values.shape[0], step):
            yield np.asarray(MergedKernel(self.values[o:o + step], self.geometry))

    def map(self, fn) -> MergedKernel:
        """``fn`` (elementwise, with fn(0) = 0: structural zeros stay zero) applied to every dense weight."""
        return MergedKernel(fn(self.values), self.geometry)

    def abs_max(self) -> float:
        return float(np.abs(self.values).max()) if self.values.size else 0.0

    def phases(self) -> np.ndarray:
        """Parity u of each output phase (``stride * p mod upsample``), per axis."""
        return (self.geometry.stride * np.arange(self.geometry.r_out)) % self.geometry.upsample

    def per_channel(self, values: np.ndarray) -> np.ndarray:
        """A sum over each dense output channel's weights of ``values`` (merged taps' shape, e.g. |w|), one entry
        per dense output channel (C_out r_out^2)."""
        per = values.sum(axis=(1, 4, 5))  # (C_out, U, U): the merged taps one output phase reads, each once
        u = self.phases()
        return per[:, u[:, None], u[None, :]].reshape(-1)

    def dense_sum(self, values: np.ndarray) -> float:
        """The sum over every dense weight of ``values`` (merged taps' shape, zero at structural zeros)."""
        return float((self._flat(values).sum(axis=(0, 1)) * self.multiplicity()).sum())

    def row_counts(self, channels: np.ndarray) -> np.ndarray:
        """Per row of the dense kernel (input channel, input phase, derived tap), the sum of this kernel's values
        over the dense output ``channels``; with 0/1 values, how many of them have a weight there. Summed per
        output phase over the merged taps, then spread over the rows: no dense kernel is made."""
        g, idx = self.geometry, self.index()
        channels = np.asarray(channels)
        o, phase = np.divmod(channels, g.r_out ** 2)
        flat = self._flat()
        out = np.zeros((flat.shape[1], g.r_in, g.r_in, idx.shape[2], idx.shape[2]))
        running = self._running_sums()
        for ph in np.unique(phase):
            py, px = divmod(int(ph), g.r_out)
            taps = np.zeros((flat.shape[1], flat.shape[2] + 1, flat.shape[3] + 1))
            sel = o[phase == ph]
            if running is not None and np.all(np.diff(sel) == 1):  # a run of natural channels
                taps[:, :-1, :-1] = running[sel[-1] + 1] - running[sel[0]]
            else:
                taps[:, :-1, :-1] = flat[sel].sum(0)  # index -1: the zero in the last row and column
            out += taps[:, idx[py][:, None, :, None], idx[px][None, :, None, :]]
        return out.reshape(-1)

    def _running_sums(self) -> np.ndarray | None:
        """Running sums of the flat taps over output channels, for kernels of integers (0/1 patterns: there a
        difference of running sums is exactly the sum of a run of channels), else None. Kept once made."""
        if self._running is None:
            flat = self._flat()
            integral = flat.size < (1 << 31) and np.array_equal(flat, np.round(flat)) and \
                np.abs(flat).sum() < (1 << 52)
            self._running = np.concatenate([np.zeros((1, *flat.shape[1:])), np.cumsum(flat, axis=0)]) \
                if integral else False
        return self._running if self._running is not False else None

    def scaled(self, per_out: np.ndarray):
        """Dense output channel c times ``per_out[c]``: still merged when every phase of a channel has one factor,
        else the dense array."""
        per_out = np.asarray(per_out, dtype=np.float64).reshape(-1)
        by_phase = per_out.reshape(self.values.shape[0], -1)
        if np.ptp(by_phase, axis=1).max(initial=0) > 0:
            return np.asarray(self, dtype=np.float64) * per_out.reshape(-1, 1, 1, 1)
        return MergedKernel(self.values.astype(np.float64) * by_phase[:, 0].reshape(-1, 1, 1, 1, 1, 1),
                            self.geometry)

    def __repr__(self) -> str:
        return f"MergedKernel({self.values.shape}, {self.geometry.to_metadata()}, derived {self.shape})"


class S2DSynapse(nn.Module):
    """One natural operation (nearest up-sampling, k x k convolution, batch norm) between maps held in s2d layout.

    ``weight`` (and ``bias``) are the natural kernel: what the optimizer trains and ``init_weights`` sees.
    ``keep``: the input channels it reads (others masked: the time branch reads only the time planes).
    ``depthwise``: a per-channel scale (a 1 x 1 depthwise kernel, no bias), exported as NIR's Scale.
    ``constant_source``: the source is spatially constant; a 1 x 1 kernel on a grid ``stride`` times finer than
    the target's, its current written into every phase of the target.
    """

    def __init__(self, c_in: int, c_out: int, k: int = 3, *, stride: int = 1, upsample: int = 1, r_in: int = 1,
                 r_out: int = 1, bias: bool = True, norm: bool = False, keep: slice | None = None,
                 depthwise: bool = False, constant_source: bool = False):
        super().__init__()
        if depthwise and (c_in != c_out or k != 1 or stride != 1 or upsample != 1 or r_in != r_out or bias or norm):
            raise SpikediffError("a depthwise synapse is a per-channel scale between maps of one layout")
        if constant_source and (k != 1 or upsample != 1 or r_in != 1):
            raise SpikediffError("a constant-source synapse is a 1 x 1 kernel from a natural-layout map")
        self.c_in, self.c_out, self.k = c_in, c_out, k
        self.stride, self.upsample, self.r_in, self.r_out = stride, upsample, r_in, r_out
        self.depthwise, self.constant_source = depthwise, constant_source
        self.weight = nn.Parameter(torch.empty(c_out, 1 if depthwise else c_in, k, k))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.bias = nn.Parameter(torch.zeros(c_out)) if bias and not norm else None
        self.bn = nn.BatchNorm2d(c_out) if norm else None
        mask = torch.ones(1, c_in, 1, 1)
        if keep is not None:
            mask.zero_()
            mask[:, keep] = 1.0
        self.register_buffer("mask", mask, persistent=False)
        if not (depthwise or constant_source):
            self._geometry = axis_taps(r_in, r_out, k, stride, upsample)[:3]  # checks the layouts fit

    # -- the natural form: what training runs --------------------------------------------------------------

    def _kernel(self) -> torch.Tensor:
        return self.weight if self.depthwise else self.weight * self.mask.to(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self._kernel()
        if self.depthwise:  # a per-channel scale is the same in every layout
            return x * w.reshape(1, -1, 1, 1).repeat_interleave(self.r_in ** 2, 1)
        if self.r_in > 1:
            x = F.pixel_shuffle(x, self.r_in)
        if self.constant_source:
            y = F.conv2d(x, w, self.bias, self.stride)
        else:
            if self.upsample > 1:
                x = F.interpolate(x, scale_factor=self.upsample, mode="nearest")
            y = F.conv2d(x, w, self.bias, self.stride, self.k // 2)
        if self.bn is not None:
            y = self.bn(y)
        if self.constant_source:
            return y.repeat_interleave(self.r_out ** 2, 1)
        return F.pixel_unshuffle(y, self.r_out) if self.r_out > 1 else y

    def natural(self) -> tuple:
        """(weight, bias) of the natural kernel with batch norm folded in with its running statistics
        (differentiable); bias None when there is none."""
        w, b = self._kernel(), self.bias
        if self.bn is None:
            return w, b
        bn = self.bn
        gain = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        b0 = b if b is not None else torch.zeros_like(bn.running_mean)
        return w * gain.reshape(-1, 1, 1, 1), (b0 - bn.running_mean) * gain + bn.bias

    # -- the derived form: what export writes --------------------------------------------------------------

    def derived(self) -> tuple:
        """(weight, bias, stride, padding, groups) of the one Conv2d that computes this synapse on the s2d
        layouts (differentiable in the natural weights)."""
        w, b = self.natural()
        ro2 = self.r_out ** 2
        bias = None if b is None else b.repeat_interleave(ro2)
        if self.depthwise:
            return w.repeat_interleave(ro2, 0), bias, 1, 0, self.c_out * ro2
        if self.constant_source:
            return w.repeat_interleave(ro2, 0), bias, self.stride, 0, 1
        s, pad, a = placement(self.r_in, self.r_out, self.k, self.stride, self.upsample, dtype=w.dtype)
        return expand_kernel(w, a.to(w.device), self.r_in, self.r_out), bias, s, pad, 1

    def folded(self) -> tuple:
        """(weight, bias) of ``fused()``, differentiable (the interface quantization-aware training reads)."""
        w, b, *_ = self.derived()
        return w, b

    @property
    def derived_shape(self) -> tuple:
        """(out channels, in channels / groups, kernel, kernel) of the derived weight, without computing it."""
        ro2, ri2 = self.r_out ** 2, self.r_in ** 2
        if self.depthwise:
            return (self.c_out * ro2, 1, 1, 1)
        if self.constant_source:
            return (self.c_out * ro2, self.c_in, 1, 1)
        size = self._geometry[2]
        return (self.c_out * ro2, self.c_in * ri2, size, size)

    @property
    def geometry(self) -> S2DGeometry | None:
        """What the exporter writes into the derived Conv2d's NIR metadata (``s2d``) so that a compiler can run it
        in natural form (``export.natural_conv``); None for a synapse whose derived form is its natural one, or a
        per-channel scale or constant-source synapse."""
        if self.depthwise or self.constant_source or (self.r_in, self.r_out, self.upsample) == (1, 1, 1):
            return None
        return S2DGeometry(self.r_in, self.r_out, self.k, self.stride, self.upsample)

    @torch.no_grad()
    def compact(self) -> tuple:
        """(``DerivedKernel``, bias, stride, padding) of ``fused()`` with the kernel held as its natural one
        (float32, as the exporter writes); only for a synapse with a ``geometry``."""
        g = self.geometry
        if g is None:
            raise SpikediffError(f"{self!r} has no derived form apart from its natural one")
        w, b = self.natural()
        s, pad, _size = g.derived_conv()
        bias = None if b is None else b.repeat_interleave(self.r_out ** 2).cpu().numpy().astype(np.float32)
        return DerivedKernel(w.detach().cpu().numpy().astype(np.float32), g), bias, s, pad

    @torch.no_grad()
    def fused(self) -> nn.Conv2d:
        w, b, s, pad, groups = self.derived()
        conv = nn.Conv2d(w.shape[1] * groups, w.shape[0], w.shape[2], stride=s, padding=pad, groups=groups,
                         bias=b is not None).to(w)
        conv.weight.copy_(w)
        if b is not None:
            conv.bias.copy_(b)
        return conv.requires_grad_(False)

    def extra_repr(self) -> str:
        return (f"{self.c_in}->{self.c_out}, k={self.k}, stride={self.stride}, upsample={self.upsample}, "
                f"r {self.r_in}->{self.r_out}" + (", depthwise" if self.depthwise else "")
                + (", constant source" if self.constant_source else ""))
