"""Loihi's CUBA neuron arithmetic on integers, as Lava's bit-accurate models do it (numpy, int64).

One implementation for the two places that need it: our fixed-point readout process and the bit-exact
reference simulator. Decays are 12-bit factors applied to the magnitude and truncated (rounding towards
zero); the current u wraps and the voltage v saturates at 24 bits; the input and the threshold are
shifted left by 6 bits; u's decay constant carries Lava's offset of 1 (du = 4095 forgets u completely).
"""

from __future__ import annotations

import numpy as np

DECAY_SHIFT = 12
UNITY = 1 << DECAY_SHIFT
ACT_SHIFT = 6
UV_MAX = 1 << 23


def _decay(x, decay_const: int) -> np.ndarray:
    prod = np.asarray(x, dtype=np.int64) * (UNITY - int(decay_const))
    return np.sign(prod) * np.right_shift(np.abs(prod), DECAY_SHIFT)


def effective_bias(bias_mant, bias_exp) -> np.ndarray:
    mant, exp = np.asarray(bias_mant, dtype=np.int64), np.asarray(bias_exp, dtype=np.int64)
    return np.where(exp >= 0, np.left_shift(mant, np.maximum(exp, 0)), np.right_shift(mant, np.maximum(-exp, 0)))


def cuba_update(u, v, a_in, du: int, dv: int, bias_mant, bias_exp) -> tuple:
    """One step of the sub-threshold dynamics: (new u, new v)."""
    cur = _decay(u, int(du) + 1) + np.left_shift(np.asarray(a_in, dtype=np.int64), ACT_SHIFT)
    wrapped = np.where(cur > UV_MAX, cur - 2 * UV_MAX, cur)
    wrapped = np.where(wrapped <= -UV_MAX, cur + 2 * UV_MAX, wrapped)
    volt = _decay(v, dv) + wrapped + effective_bias(bias_mant, bias_exp)
    return wrapped, np.clip(volt, -UV_MAX + 1, UV_MAX - 1)


def lif_step(u, v, a_in, du: int, dv: int, vth: int, bias_mant, bias_exp) -> tuple:
    """One LIF step: (u, v, spikes); a neuron fires when v > vth << 6 and its v is set to 0."""
    u, v = cuba_update(u, v, a_in, du, dv, bias_mant, bias_exp)
    spikes = v > (int(vth) << ACT_SHIFT)
    return u, np.where(spikes, 0, v), spikes
