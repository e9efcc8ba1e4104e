"""NIR graph -> PyTorch, through nirtorch's interpreter, with our neuron rules (``nir_params``).

This is the reference executor for any NIR file spikediff reads: the round-trip test runs an exported
denoiser through it, and the Lava converter is checked against it on graphs we did not train. It shares
only the parameter discretization with the Lava path, and none of the model code.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .nir_params import discretize


class NirNeuron(nn.Module):
    """A discretized NIR neuron node (Lava's update order: current, then voltage, then spike and reset)."""

    def __init__(self, node, name: str, dt: float):
        super().__init__()
        d = discretize(node, name, dt)
        self.spiking = d.spiking
        self.cuba = not np.all(d.du == 1)
        as_t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32))  # noqa: E731
        for key in ("dv", "du", "gain", "bias"):
            self.register_buffer(key, as_t(getattr(d, key)))
        if d.spiking:
            self.register_buffer("v_threshold", as_t(d.v_threshold))
            self.register_buffer("v_reset", as_t(d.v_reset))

    def forward(self, x: torch.Tensor, state=None):
        u_prev, v_prev = state if state is not None else (torch.zeros_like(x), torch.zeros_like(x))
        u = (1 - self.du) * u_prev + self.gain * x if self.cuba else self.gain * x
        v = (1 - self.dv) * v_prev + u + self.bias
        if not self.spiking:
            return v, (u, v)
        spikes = (v > self.v_threshold).to(x.dtype)
        v = torch.where(spikes.bool(), self.v_reset.expand_as(v), v)
        return spikes, (u, v)


class _Flatten(nn.Module):
    """NIR shapes have no batch axis: NIR start_dim 0 is torch start_dim 1."""

    def __init__(self, node):
        super().__init__()
        self.start, self.end = int(node.start_dim), int(node.end_dim)

    def forward(self, x):
        end = self.end if self.end < 0 else self.end + 1
        return torch.flatten(x, self.start + 1, end)


class _Scale(nn.Module):
    def __init__(self, node):
        super().__init__()
        self.register_buffer("scale", torch.as_tensor(np.asarray(node.scale, dtype=np.float32)))

    def forward(self, x):
        return x * self.scale


def _linear(node):
    layer = nn.Linear(node.weight.shape[1], node.weight.shape[0], bias=hasattr(node, "bias"))
    layer.weight.data = torch.as_tensor(np.asarray(node.weight, dtype=np.float32))
    if hasattr(node, "bias"):
        layer.bias.data = torch.as_tensor(np.asarray(node.bias, dtype=np.float32))
    return layer


def to_torch(graph, dt: float = 1e-4):
    """An executable module: ``out, state = module(x, state)`` runs one time step."""
    import nir
    import nirtorch

    names = {id(node): name for name, node in graph.nodes.items()}
    node_map = {nir.Flatten: _Flatten, nir.Linear: _linear, nir.Affine: _linear, nir.Scale: _Scale}
    for cls in (nir.LIF, nir.LI, nir.CubaLIF, nir.CubaLI, nir.IF, nir.I):
        node_map[cls] = lambda node: NirNeuron(node, names.get(id(node), type(node).__name__), dt)
    return nirtorch.nir_to_torch(graph, node_map)
