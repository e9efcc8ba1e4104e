"""NIR neuron parameters -> discrete-time update rules: the one place where tau, r and dt become decays.

NIR neurons are continuous-time ODEs; a simulator steps them with some dt. Forward Euler with step dt,
the convention of snnTorch's exporter and importer (dt = 1e-4) and of Norse/Rockpool's discrete
exports, gives for ``tau dv/dt = (v_leak - v) + r I``::

    v[t] = (1 - dt/tau) v[t-1] + (dt/tau) v_leak + (r dt/tau) I[t]

so ``decay = dt / tau`` (Lava's dv or du), ``gain = r dt / tau`` (folded into the incoming weights) and
``bias = v_leak dt / tau`` (Lava's bias). snnTorch writes r = tau/dt, i.e. gain 1; frameworks that write
r = 1 give gain dt/tau, which folding into the weights keeps exact. IF and I have no leak (decay 0,
gain r); CubaLIF/CubaLI add a synaptic current with decay dt/tau_syn and gain w_in dt/tau_syn.

tau and r pass through float32 files, so ``dt/tau`` comes back as 0.25000001 rather than 0.25. Decays and
gains within 1e-6 (relative) of a multiple of 1/4096, Lava's 12-bit decay grid, are snapped to it:
otherwise a neuron exactly at threshold could fire in one simulator and not in another.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import SpikediffError

SPIKING = ("LIF", "IF", "CubaLIF")  # NIR neuron classes, by name
NONSPIKING = ("LI", "CubaLI", "I")


@dataclass
class DiscreteNeuron:
    """One NIR neuron node as a discrete update, per-neuron arrays (broadcastable to the node shape)."""

    spiking: bool
    dv: np.ndarray  # membrane decay per step (Lava dv), 0 = no leak
    du: np.ndarray  # synaptic-current decay per step (Lava du), 1 = no current memory
    gain: np.ndarray  # factor on the input current (folded into the incoming synapses)
    bias: np.ndarray  # constant added to v every step (Lava bias)
    v_threshold: np.ndarray | None
    v_reset: np.ndarray | None


def _arr(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _snap(x: np.ndarray, bits: int = 12) -> np.ndarray:
    grid = np.round(x * (1 << bits)) / (1 << bits)
    return np.where(np.abs(grid - x) <= 1e-6 * np.maximum(np.abs(x), 1e-30), grid, x)


def _ratio(name: str, node_name: str, dt: float, tau) -> np.ndarray:
    tau = _arr(tau)
    if np.any(tau <= 0):
        raise SpikediffError(f"NIR node {node_name!r}: {name} must be positive, got min {tau.min()}")
    ratio = _snap(dt / tau)
    if np.any(ratio > 1):
        raise SpikediffError(f"NIR node {node_name!r}: dt/{name} = {ratio.max():.3g} > 1 with dt={dt}: the Euler step "
                             f"would overshoot (is dt right for this graph? pass the exporter's dt)")
    return ratio


def discretize(node, node_name: str, dt: float) -> DiscreteNeuron:
    """Forward-Euler discretization of a NIR neuron node (see module docstring)."""
    import nir

    kind = type(node).__name__
    if isinstance(node, (nir.LIF, nir.LI)):
        a = _ratio("tau", node_name, dt, node.tau)
        du, dv, gain, bias = np.ones_like(a), a, _arr(node.r) * a, _arr(node.v_leak) * a
    elif isinstance(node, (nir.CubaLIF, nir.CubaLI)):
        a_syn = _ratio("tau_syn", node_name, dt, node.tau_syn)
        a_mem = _ratio("tau_mem", node_name, dt, node.tau_mem)
        du, dv = a_syn, a_mem
        # Current: u = (1 - du) u + w_in du I. Membrane: v = (1 - dv) v + r dv u + v_leak dv. Folding r dv into
        # u's gain keeps the pair linear: u' = (1 - du) u' + (w_in du r dv) I, v = (1 - dv) v + u' + bias.
        gain = _arr(node.w_in) * a_syn * _arr(node.r) * a_mem
        bias = _arr(node.v_leak) * a_mem
    elif isinstance(node, (nir.IF, nir.I)):
        r = _arr(node.r)
        du, dv, gain, bias = np.ones_like(r), np.zeros_like(r), r, np.zeros_like(r)
    else:
        raise SpikediffError(f"NIR node {node_name!r}: {kind} is not a neuron")
    spiking = kind in SPIKING
    thr = _arr(node.v_threshold) if spiking else None
    reset = None
    if spiking:
        reset = _arr(node.v_reset) if getattr(node, "v_reset", None) is not None else np.zeros_like(thr)
    return DiscreteNeuron(spiking, dv, du, _snap(gain), bias, thr, reset)  # decays were snapped in _ratio
