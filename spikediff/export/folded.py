"""A NIR graph as discrete-time populations and weights, in NIR layout: what the Lava builder, the
fixed-point quantizer and the bit-exact simulator all start from.

Each neuron node becomes a ``DiscreteNeuron`` (``nir_params``); its input gain r*dt/tau is folded into the
weights of every synapse that feeds it, and the synapses' biases (a constant input current) are moved into
the neuron's bias, which Lava adds to the voltage. Both are exact only under conditions checked here, with
errors that name the node.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .nir_params import DiscreteNeuron, discretize
from .nir_to_lava import NirGraphError, Plan, Synapse, _type, conv_out_shape, conv_spec, dense_spec, plan

IMAGE_WEIGHTS = ("Conv2d", "SumPool2d", "AvgPool2d")


@dataclass
class FoldedSynapse:
    syn: Synapse
    conv: object | None  # ConvSpec with the gain folded into its weight (bias moved to the neuron), or None
    dense: np.ndarray | None  # (out, in) NIR order, gain folded, for flat synapses

    @property
    def weight(self) -> np.ndarray:
        return self.conv.weight if self.conv is not None else self.dense


@dataclass
class Folded:
    plan: Plan
    neurons: dict  # population -> DiscreteNeuron (gain already folded, bias below)
    bias: dict  # population -> NIR-shaped bias added to v every step (neuron bias + synapse biases)
    synapses: list  # FoldedSynapse, in plan order

    def incoming(self, population: str) -> list:
        return [f for f in self.synapses if f.syn.dst == population]


def synaptic_input(f: FoldedSynapse, x: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
    """What synapse ``f`` delivers for a batch ``x`` (N, *source shape), in float64, with its folded weights
    or ``weight`` (same layout; integer weights give exact integer sums below 2**53)."""
    import torch

    w = torch.as_tensor(np.asarray(f.weight if weight is None else weight, dtype=np.float64))
    x = torch.as_tensor(np.asarray(x, dtype=np.float64))
    if f.conv is not None:
        c = f.conv
        return torch.nn.functional.conv2d(x, w, None, c.stride, c.padding, c.dilation, c.groups).numpy()
    return (x.reshape(len(x), -1) @ w.T).numpy()


def is_conv(p: Plan, s: Synapse) -> bool:
    kind = _type(s.node)
    return kind in IMAGE_WEIGHTS or (kind == "Scale" and len(p.shapes[s.src]) == 3 and not s.flat_in)


def fold(graph, dt: float | None = None) -> Folded:
    """``dt``: the graph's time step; None takes the one ``spikediff export`` writes into the metadata (else 1e-4,
    snnTorch's convention)."""
    if dt is None:
        dt = float((graph.metadata or {}).get("dt", 1e-4))
    p = plan(graph)
    neurons: dict[str, DiscreteNeuron] = {name: discretize(node, name, dt) for name, node in p.populations.items()}
    for name, n in neurons.items():
        for key in ("dv", "du") + (("v_threshold",) if n.spiking else ()):
            if np.ptp(getattr(n, key)) > 0:
                raise NirGraphError(f"NIR node {name!r}: Lava needs one {key} per population, got several values")
        if n.spiking and np.any(n.v_reset != 0):
            raise NirGraphError(f"NIR node {name!r}: v_reset must be 0 (Lava resets the voltage to zero)")
    bias = {name: np.broadcast_to(n.bias, p.shapes[name]).astype(np.float64).copy() for name, n in neurons.items()}

    def check_bias(s, b):
        if np.any(b != 0) and np.any(neurons[s.dst].du != 1):
            raise NirGraphError(f"NIR node {s.name!r}: a bias into the current-based neuron {s.dst!r} is a constant "
                                f"input current; Lava's bias enters the voltage, so it cannot be mapped exactly")

    synapses = []
    for s in p.synapses:
        gain_nir = np.broadcast_to(neurons[s.dst].gain, p.shapes[s.dst])
        if is_conv(p, s):
            spec = conv_spec(s, p.shapes[s.src])
            out_shape = conv_out_shape(spec, p.shapes[s.src])
            gain = _per_channel(gain_nir.reshape(out_shape), out_shape, s)
            check_bias(s, spec.bias)
            b = np.broadcast_to((spec.bias * gain)[:, None, None], out_shape)
            bias[s.dst] += b.reshape(p.shapes[s.dst])
            folded = type(spec)(spec.weight * gain[:, None, None, None], np.zeros_like(spec.bias), spec.stride,
                                spec.padding, spec.dilation, spec.groups)
            synapses.append(FoldedSynapse(s, folded, None))
        else:
            if len(p.shapes[s.dst]) != 1 or (len(p.shapes[s.src]) != 1 and not s.flat_in):
                raise NirGraphError(f"NIR node {s.name!r}: {_type(s.node)} between non-flat populations needs Flatten "
                                    f"nodes")
            w, b = dense_spec(s, int(np.prod(p.shapes[s.src])))
            if b is not None:
                check_bias(s, b)
                bias[s.dst] += b * gain_nir
            synapses.append(FoldedSynapse(s, None, w * gain_nir[:, None]))
    return Folded(p, neurons, bias, synapses)


def _per_channel(gain: np.ndarray, shape: tuple, s: Synapse) -> np.ndarray:
    g = np.broadcast_to(gain, shape).reshape(shape[0], -1)
    if np.ptp(g, axis=1).max() > 0:
        raise NirGraphError(f"NIR node {s.dst!r}: its input gain r*dt/tau varies within a channel; it cannot be "
                            f"folded into the weights of {s.name!r}")
    return g[:, 0].astype(np.float64)
