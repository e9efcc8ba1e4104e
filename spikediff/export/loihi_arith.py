"""Loihi's CUBA neuron arithmetic on integers, as Lava's bit-accurate models do it.

One implementation for the places that need it: our fixed-point readout process in Lava (numpy) and the
batched bit-exact simulator (torch int64 tensors, CPU or CUDA); every function takes either. Decays are
12-bit factors applied to the magnitude and truncated (rounding towards zero); the current u wraps and the
voltage v saturates at 24 bits; the input and the threshold are shifted left by 6 bits; u's decay constant
carries Lava's offset of 1 (du = 4095 forgets u completely).
"""

from __future__ import annotations

import numpy as np

DECAY_SHIFT = 12
UNITY = 1 << DECAY_SHIFT
ACT_SHIFT = 6
UV_MAX = 1 << 23


def _is_torch(x) -> bool:
    return type(x).__module__ == "torch"


def _int(x, like=None):
    """x as int64 in the array library of ``like`` (or of x)."""
    if _is_torch(x):
        return x.long()
    if like is not None and _is_torch(like):
        import torch

        return torch.as_tensor(np.asarray(x), dtype=torch.int64, device=like.device)
    return np.asarray(x, dtype=np.int64)


def _where(cond, a, b):
    if _is_torch(cond):
        import torch

        return torch.where(cond, a, b)
    return np.where(cond, a, b)


def _decay(x, decay_const: int):
    keep = UNITY - int(decay_const)
    x = _int(x)
    if keep == 0:
        return x * 0
    if keep == UNITY:
        return x
    if _is_torch(x):  # one kernel instead of four: x * keep / 4096, truncated towards zero
        import torch

        return torch.div(x * keep, UNITY, rounding_mode="trunc")
    prod = x * keep
    mag = abs(prod) >> DECAY_SHIFT
    return np.where(prod < 0, -mag, mag)


def _wrap(cur):
    """Lava's 24-bit wrap of the current: above 2**23 subtract 2**24, at or below -2**23 add it."""
    if _is_torch(cur) and cur.numel():
        import torch

        lo, hi = torch.aminmax(cur)
        if hi <= UV_MAX and lo > -UV_MAX:  # the common case: nothing to wrap
            return cur
    wrapped = _where(cur > UV_MAX, cur - 2 * UV_MAX, cur)
    return _where(wrapped <= -UV_MAX, cur + 2 * UV_MAX, wrapped)


def effective_bias(bias_mant, bias_exp):
    """``bias_mant << bias_exp`` (a right shift for negative exponents)."""
    mant, exp = _int(bias_mant), _int(bias_exp, like=bias_mant)
    left = mant << (exp * (exp > 0))
    return _where(exp >= 0, left, mant >> (-exp * (exp < 0)))


def cuba_update(u, v, a_in, du: int, dv: int, bias_mant, bias_exp=0) -> tuple:
    """One step of the sub-threshold dynamics: (new u, new v). With ``bias_exp`` = 0, ``bias_mant`` may be
    the effective bias (precomputed once by a caller that steps many times)."""
    a_in = _int(a_in)
    wrapped = _wrap(_decay(_int(u, like=a_in), int(du) + 1) + (a_in << ACT_SHIFT))
    bias = _int(bias_mant, like=a_in) if _is_scalar_zero(bias_exp) else effective_bias(_int(bias_mant, like=a_in),
                                                                                         bias_exp)
    volt = _decay(_int(v, like=a_in), dv) + wrapped + bias
    return wrapped, volt.clip(-UV_MAX + 1, UV_MAX - 1)


def _is_scalar_zero(x) -> bool:
    return np.ndim(x) == 0 and not _is_torch(x) and int(x) == 0


def lif_step(u, v, a_in, du: int, dv: int, vth: int, bias_mant, bias_exp=0) -> tuple:
    """One LIF step: (u, v, spikes); a neuron fires when v > vth << 6 and its v is set to 0."""
    u, v = cuba_update(u, v, a_in, du, dv, bias_mant, bias_exp)
    spikes = v > (int(vth) << ACT_SHIFT)
    return u, _where(spikes, 0, v), spikes
