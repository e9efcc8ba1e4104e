"""A plan's populations as discrete-time neurons with their input gains folded into the weights: the second
stage of the deployment compiler, and the form every backend runs.

Each neuron node becomes a ``DiscreteNeuron`` (``nir_params.discretize``, forward Euler with the graph's dt);
its input gain r*dt/tau multiplies the weights of every synapse that feeds it. A synapse's bias is a
constant input current: into a neuron without current memory (LIF, IF, LI: u = a_in) it is the same as a
bias on the voltage, which Lava adds every step, so it moves into the neuron's bias. Into a current-based
neuron (CubaLIF, CubaLI) it must pass through the current's decay, so it becomes a synapse from ``CONST``,
one neuron that fires at every step (a plain LIF with a bias above its threshold on Lava): exact in float
and in fixed point, where it is quantized like any weight into that population.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .nir_params import DiscreteNeuron, discretize
from .plan import CONST, ConvOp, DenseOp, NirGraphError, Plan, Synapse


@dataclass(frozen=True)
class FoldedSynapse:
    syn: Synapse
    op: ConvOp | DenseOp  # gain folded into the weights; biases moved out (to the neuron or a CONST synapse)
    src_shape: tuple
    dst_shape: tuple

    @property
    def conv(self) -> ConvOp | None:
        return self.op if isinstance(self.op, ConvOp) else None

    @property
    def weight(self) -> np.ndarray:
        return self.op.weight


@dataclass(frozen=True)
class Folded:
    plan: Plan
    neurons: dict  # population -> DiscreteNeuron (gain folded)
    bias: dict  # population -> NIR-shaped bias added to v every step (neuron bias + synapse biases)
    synapses: tuple  # FoldedSynapse, in plan order; CONST synapses last

    def incoming(self, population: str) -> list:
        return [f for f in self.synapses if f.syn.dst == population]

    def outgoing(self, source: str) -> list:
        return [f for f in self.synapses if f.syn.src == source]

    @property
    def has_const(self) -> bool:
        return any(f.syn.src == CONST for f in self.synapses)

    def scalar(self, population: str, key: str) -> float:
        """A per-population parameter (dv, du, v_threshold): one value, checked when folding."""
        return float(np.ravel(getattr(self.neurons[population], key))[0])


def synaptic_input(f: FoldedSynapse, x: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
    """What synapse ``f`` delivers for a batch ``x`` (N, *source shape), float64, with its folded weights or
    ``weight`` (same layout), shaped (N, *destination shape)."""
    op = f.op if weight is None else f.op.with_weight(np.asarray(weight, np.float64))
    x = np.asarray(x, np.float64)
    return op.apply(x.reshape(len(x), *f.src_shape)).reshape(len(x), *f.dst_shape)


def fold(p: Plan, dt: float) -> Folded:
    neurons: dict[str, DiscreteNeuron] = {name: discretize(pop.node, name, dt) for name, pop in p.populations.items()}
    shapes = p.shapes
    for name, n in neurons.items():
        for key in ("dv", "du") + (("v_threshold",) if n.spiking else ()):
            if np.ptp(np.asarray(getattr(n, key), dtype=np.float64)) > 0:
                raise NirGraphError(f"NIR node {name!r}: Lava needs one {key} per population, got several values")
        if n.spiking and np.any(n.v_reset != 0):
            raise NirGraphError(f"NIR node {name!r}: v_reset must be 0 (Lava and Loihi reset the voltage to zero; NIR "
                                f"1.0 has no reset by subtraction)")
    bias = {name: np.broadcast_to(n.bias, shapes[name]).astype(np.float64).copy() for name, n in neurons.items()}
    synapses, const = [], []
    for s in p.synapses:
        dst_shape = shapes[s.dst]
        gain = np.broadcast_to(neurons[s.dst].gain, dst_shape).astype(np.float64)
        if s.is_conv:
            out_shape = s.op.out_shape(shapes[s.src])
            g = gain.reshape(out_shape).reshape(out_shape[0], -1)
            if np.ptp(g, axis=1).max() > 0:
                raise NirGraphError(f"NIR node {s.dst!r}: its input gain r*dt/tau varies within a channel; it cannot be "
                                    f"folded into the weights of {s.name!r}")
            op = s.op.scaled(g[:, 0])
        else:
            op = s.op.scaled(gain.reshape(-1))
        synapses.append(FoldedSynapse(s, op, shapes[s.src], dst_shape))
        if s.bias is None or not np.any(s.bias != 0):
            continue
        b = np.asarray(s.bias, dtype=np.float64).reshape(dst_shape) * gain
        if np.all(np.asarray(neurons[s.dst].du) == 1):
            bias[s.dst] += b
        else:  # a current-based neuron: the constant current enters u, through a CONST synapse
            const.append(FoldedSynapse(Synapse(f"{s.name}.bias", CONST, s.dst, DenseOp(np.zeros((b.size, 1))), None,
                                               0, s.nodes, False, False), DenseOp(b.reshape(-1, 1)), (1,), dst_shape))
    # one CONST synapse per population (several biased synapses into one population add up)
    merged: dict = {}
    for f in const:
        if f.syn.dst in merged:
            prev = merged[f.syn.dst]
            merged[f.syn.dst] = FoldedSynapse(prev.syn, DenseOp(prev.weight + f.weight), (1,), prev.dst_shape)
        else:
            merged[f.syn.dst] = f
    return Folded(p, neurons, bias, tuple(synapses) + tuple(merged.values()))

