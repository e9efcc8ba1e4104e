"""Who connects to whom in a folded network, counted exactly through its own convolutions.

A chip stores a synapse for each nonzero integer weight (a zero weight is dropped by the compiler), so
connectivity is the pattern of nonzero weights of ``fixed_point`` as a 0/1 kernel. Pushing a vector
through that kernel (``deliver``) counts, per target neuron, the synapses reached by a source activity
(spikes x synapses = synaptic ops); pulling one back (``pull``) gives, per source neuron, how many marked
targets it reaches (fan-out; with a 0/1 target mask: which sources feed a core). Convolutions count
padding, stride and groups exactly, with no index bookkeeping of our own.
"""

from __future__ import annotations

import numpy as np
import torch


class Connectivity:
    def __init__(self, folded, fx=None):
        """``fx``: a FixedPoint whose nonzero integer weights are the synapses (None: the folded float weights:
        an ANN's MACs)."""
        self.folded, self.plan = folded, folded.plan
        self.masks, self.masks32, self.out_shapes = {}, {}, {}
        for f in folded.synapses:
            w = f.weight if fx is None else fx.weights[f.syn.name]
            mask = np.asarray(w) != 0
            self.masks[f.syn.name] = torch.as_tensor(mask, dtype=torch.float64)
            self.masks32[f.syn.name] = torch.as_tensor(mask, dtype=torch.float32)  # for 0/1 counts (exact)
            if f.conv is not None:
                self.out_shapes[f.syn.name] = f.op.out_shape(f.src_shape)

    def size(self, name: str) -> int:
        return int(np.prod(self.plan.shapes[name]))

    def _forward(self, f, x: torch.Tensor) -> torch.Tensor:
        mask = self.masks[f.syn.name]
        x = x.reshape(1, *self.plan.shapes[f.syn.src])
        if f.conv is not None:
            c = f.conv
            return torch.nn.functional.conv2d(x, mask, None, c.stride, c.padding, c.dilation, c.groups).reshape(-1)
        return mask @ x.reshape(-1)

    def deliver(self, f, source_values: np.ndarray) -> np.ndarray:
        """Per target neuron: sum over its synapses of the source's value (spike counts -> synaptic ops)."""
        with torch.no_grad():
            return self._forward(f, torch.as_tensor(np.asarray(source_values, dtype=np.float64))).numpy()

    def pull(self, f, target_values: np.ndarray) -> np.ndarray:
        """Per source neuron: sum over its synapses of the target's value (ones -> fan-out). Integer values
        (counts, 0/1 masks) are pulled in float32, exact below 2**24 and several times faster."""
        values = np.asarray(target_values)
        integer = np.array_equal(values, np.round(values)) and np.abs(values).sum() * max(
            1, int(np.prod(self.masks[f.syn.name].shape[1:]))) < (1 << 24)
        mask = (self.masks32 if integer else self.masks)[f.syn.name]
        t = torch.as_tensor(values, dtype=mask.dtype)
        with torch.no_grad():
            if f.conv is None:
                return (mask.T @ t).double().numpy()
            c = f.conv  # the transposed convolution: the gradient of conv2d with respect to its input
            out = torch.nn.grad.conv2d_input((1, *self.plan.shapes[f.syn.src]), mask,
                                             t.reshape(1, *self.out_shapes[f.syn.name]), c.stride, c.padding,
                                             c.dilation, c.groups)
            return out.reshape(-1).double().numpy()

    def feeds(self, f, owner: np.ndarray, cores: list) -> np.ndarray:
        """(len(cores), source neurons) booleans: which source neurons have a synapse onto each target core, given
        ``owner`` (per target neuron, its core). One batched pull for all cores: the mapper asks this for every
        synapse layer and every budget it tries, and core-by-core pulls made pricing a U-Net take minutes."""
        mask = self.masks32[f.syn.name]
        t = torch.as_tensor(np.stack([owner == c for c in cores]), dtype=mask.dtype)  # (K, targets), 0/1
        with torch.no_grad():
            if f.conv is None:
                return (t @ mask).numpy() > 0
            c = f.conv
            out = torch.nn.grad.conv2d_input((len(cores), *self.plan.shapes[f.syn.src]), mask,
                                             t.reshape(len(cores), *self.out_shapes[f.syn.name]), c.stride,
                                             c.padding, c.dilation, c.groups)
            return out.reshape(len(cores), -1).numpy() > 0

    def reaches(self, f, owner: np.ndarray, cores) -> np.ndarray:
        """(target neurons, len(cores)) booleans: which of the source's cores (``owner``: per source neuron, its
        core) have a synapse onto each target neuron. One batched push for all cores."""
        mask = self.masks32[f.syn.name]
        t = torch.as_tensor(np.stack([owner == c for c in cores]), dtype=mask.dtype)  # (K, sources), 0/1
        with torch.no_grad():
            if f.conv is None:
                return (mask @ t.T).numpy() > 0
            c = f.conv
            out = torch.nn.functional.conv2d(t.reshape(len(cores), *self.plan.shapes[f.syn.src]), mask, None,
                                             c.stride, c.padding, c.dilation, c.groups)
            return out.reshape(len(cores), -1).T.numpy() > 0

    def synapses(self, f) -> int:
        """Number of synapses (nonzero weights, expanded over a convolution's positions)."""
        return int(round(self.deliver(f, np.ones(self.size(f.syn.src))).sum()))

    def fan_in(self, name: str) -> np.ndarray:
        """Per neuron of population ``name``: synapses arriving at it (all incoming weight nodes)."""
        out = np.zeros(self.size(name))
        for f in self.folded.incoming(name):
            out += self.deliver(f, np.ones(self.size(f.syn.src)))
        return out

    def outgoing(self, name: str) -> list:
        return [f for f in self.folded.synapses if f.syn.src == name]
