"""A spiking network written as a table of populations and synapse layers, the form every spikediff
model takes so that one NIR exporter, one Lava converter and one fixed-point simulator serve them all.

A subclass sets ``graph`` (population -> [(synapse layer, source population)], in evaluation order),
with ``"input"`` the host tensor (injected as a current, constant over the T SNN steps) and
``"readout"`` a non-spiking CUBA population whose synaptic current, averaged over the T steps, is the
network's real-valued output (FSDDIM's synaptic current learning). Every other population is a Lava-exact
LIF (``neurons.lava_lif``). The readout is flat; the model's ``readout_shape`` says how the host reads it.
Its config carries ``num_steps``, ``beta``, ``threshold`` and ``readout_alpha``; ``neuron_params`` may give a
population its own (beta, threshold).

A synapse from a population to itself is a recurrent (lateral) synapse: at SNN step t it delivers the
population's spikes of step t - 1 (nothing at t = 0), which is what a Lava synapse's one-step delay does
to a self-loop, so it needs no alignment on Lava. Longer cycles are not allowed (see ``export.plan``).
Synapse layers whose weight has ``requires_grad`` off are fixed wiring (``init_weights`` leaves them).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .neurons import lava_lif


def fake_quantize(w: torch.Tensor, scale: float, split: tuple | None = None) -> torch.Tensor:
    """w on Loihi's weight grid at ``scale`` (even integers in [-256, 254], divided by the scale: the grid of
    ``export.quantize``), with the straight-through estimator for the gradient (quantization-aware training).
    ``split``: (parts, limit) of a synapse deployed as parallel parts (``export.split``): each part, cut at
    ``limit``, on the grid, summed."""
    def grid(x):
        return torch.clamp(2 * torch.round(x * scale / 2), -256, 254) / scale

    if split is None:
        q = grid(w)
    else:  # the cut of export.split.split_readouts, in torch (tests/test_latent.py checks they agree)
        parts, limit = split
        rest, q = w.detach(), torch.zeros_like(w)
        for _ in range(int(parts)):
            part = torch.clamp(rest, -limit, limit)
            q, rest = q + grid(part), rest - part
    return w + (q - w).detach()


def quantized_forward(layer: nn.Module, x: torch.Tensor, scale: float, split: tuple | None = None) -> torch.Tensor:
    """A synapse layer run with its deployed weight fake-quantized: a batch-normalised convolution with its
    statistics frozen and folded (the weight export writes), a plain layer as it is."""
    import torch.nn.functional as F

    w, b = layer.folded() if hasattr(layer, "folded") else (layer.weight, layer.bias)
    w = fake_quantize(w, scale, split)
    if isinstance(layer, nn.Linear):
        return F.linear(x, w, b)
    conv = getattr(layer, "conv", layer)
    if isinstance(conv, nn.Conv2d):  # its own convolution (``token_denoiser.DenseConv`` computes a product)
        return conv._conv_forward(x, w, b)
    return F.conv2d(x, w, b, conv.stride, conv.padding, conv.dilation, conv.groups)


def deployable(layer: nn.Module) -> nn.Module:
    """The plain Conv2d / Linear a synapse layer equals at inference (a ``fused()`` layer folds its batch norm)."""
    return layer.fused() if hasattr(layer, "fused") else layer


class SpikingGraph(nn.Module):
    graph: dict = {}
    neuron_params: dict = {}  # population -> (beta, threshold) where it differs from the config

    @property
    def spiking_layers(self) -> tuple:
        return tuple(name for name in self.graph if name != "readout")

    def _make_neurons(self) -> None:
        cfg = self.config
        self.lif = nn.ModuleDict({name: lava_lif(*self.neuron_params.get(name, (cfg.beta, cfg.threshold)))
                                  for name in self.spiking_layers})
        self._synapse_shapes = None  # filled by synapse_shapes()

    def example_input(self) -> torch.Tensor:
        """A host input of batch 1 (zeros), to read the layer shapes off."""
        raise NotImplementedError

    def run_graph(self, inp: torch.Tensor, stats: dict | None = None, rates: tuple = (),
                  trains: dict | None = None, lif_step=None) -> torch.Tensor:
        """Mean readout synaptic current over the T steps (N, readout neurons) for host input ``inp``.

        If ``stats`` is a dict, spike counts per layer (summed over batch and SNN steps) are added to it.
        With ``rates`` (population names) it returns (current, {name: firing rate per neuron (N, *shape)}),
        differentiable: the VQ-SVAE encoder reads features off them. ``trains``: {population: []}, filled
        with that population's spikes of every step (the plasticity rule reads them). ``lif_step(population,
        drive, mem) -> (spikes, mem)`` replaces the snnTorch neurons (the ONNX export's plain tensor ops).
        """
        cfg = self.config
        if lif_step is None:
            lif_step = self._lif_step
        steps, n = cfg.num_steps, inp.shape[0]
        # Layer by layer: every synapse layer sees all T steps of its source at once, as one batch of T * N
        # (the graph is feedforward but for self-loops, so each population's whole spike train is known
        # before its targets run). The same sums as step by step, and batch norm sees (T, N) statistics.
        # The host input is constant over the T steps: what its synapses deliver is computed once.
        trains_all: dict = {}
        total = None
        for target, synapses in self.graph.items():
            readout = target == "readout"
            drive = None  # (T, N, ...), or (1, N, ...) when only the constant input feeds it
            varying = any(src not in ("input", target) for _syn, src in synapses)
            for syn, src in synapses:
                if src == target:
                    continue  # a self-loop: added step by step below
                if src == "input":
                    d = self._synapse(syn, inp, readout)[None]
                else:
                    d = self._synapse(syn, trains_all[src].flatten(0, 1), readout)
                    d = d.reshape(steps, n, *d.shape[1:])
                drive = d if drive is None else drive + d
            recurrent = [syn for syn, src in synapses if src == target]
            if readout:
                current = None
                for t in range(steps):
                    d_t = drive[t] if varying else drive[0]
                    current = d_t if current is None else cfg.readout_alpha * current + d_t
                    total = current if total is None else total + current
                continue
            out, mem = [], None
            for t in range(steps):
                d_t = drive[t] if varying else drive[0]
                for syn in recurrent:
                    if t:
                        d_t = d_t + self._synapse(syn, out[-1], False)
                s_t, mem = lif_step(target, d_t, torch.zeros_like(d_t) if mem is None else mem)
                out.append(s_t)
            trains_all[target] = torch.stack(out)
            if stats is not None:
                stats[target] = stats.get(target, 0.0) + float(trains_all[target].detach().sum())
        for name, train in (trains or {}).items():
            train.extend(trains_all[name].unbind(0))
        if rates:
            return total / steps, {name: sum(trains_all[name].unbind(0)) / steps for name in rates}
        return total / steps

    def _lif_step(self, population: str, drive: torch.Tensor, mem: torch.Tensor) -> tuple:
        return self.lif[population](drive, mem)

    def _synapse(self, name: str, spikes: torch.Tensor, flat_target: bool) -> torch.Tensor:
        layer = getattr(self, name)
        spikes = spikes.to(layer.weight.dtype)  # snnTorch emits float32 spikes; a float64 model needs float64
        x = spikes.flatten(1) if isinstance(layer, nn.Linear) else spikes
        scale = (getattr(self, "qat_scales", None) or {}).get(name)
        split = (getattr(self, "qat_split", None) or {}).get(name)
        out = layer(x) if scale is None else quantized_forward(layer, x, scale, split)
        return out.flatten(1) if flat_target else out

    def depths(self) -> dict:
        """Synapse layers from the input to each population, longest path (Lava latency in steps); a
        self-loop does not count."""
        depth = {"input": 0}
        for target, synapses in self.graph.items():
            depth[target] = max(depth[src] + 1 for _, src in synapses if src != target)
        return depth

    def synapse_shapes(self) -> dict:
        """(input shape, output shape) of every synapse layer, without the batch axis.

        Read off one dry run at batch 1 rather than recomputed from the layer arithmetic, so a change to a
        layer cannot leave a stale copy behind; cached.
        """
        if self._synapse_shapes is None:
            shapes, hooks = {}, []

            def record(name):
                def hook(_module, inp, out):
                    shapes[name] = (tuple(inp[0].shape[1:]), tuple(out.shape[1:]))
                return hook

            for synapses in self.graph.values():
                hooks += [getattr(self, syn).register_forward_hook(record(syn)) for syn, _src in synapses]
            param = next(self.parameters())
            try:
                with torch.no_grad():
                    self.run_graph(self.example_input().to(param))
            finally:
                for h in hooks:
                    h.remove()
            self._synapse_shapes = shapes
        return dict(self._synapse_shapes)

    def neuron_counts(self) -> dict:
        """Neurons per spiking layer (for firing rates)."""
        shapes = self.synapse_shapes()
        return {name: math.prod(shapes[self.graph[name][0][0]][1]) for name in self.spiking_layers}

    def init_weights(self, input_gain: float = 2.0, hidden_gain: float = 3.0, readout_gain: float = 0.1) -> None:
        """Binary, sparse inputs need larger weights than PyTorch's default init to reach the threshold:
        std = gain / sqrt(fan_in) gives every hidden layer a firing rate of about 0.2-0.4 at init. The
        readout starts near zero so an untrained model outputs about nothing rather than garbage, and a
        recurrent synapse at zero, so the network starts as its feedforward self."""
        for target, synapses in self.graph.items():
            for syn, src in synapses:
                layer = getattr(self, syn)
                if not layer.weight.requires_grad:
                    continue  # fixed wiring
                if src == target:
                    nn.init.zeros_(layer.weight)
                    continue
                gain = input_gain if src == "input" else readout_gain if target == "readout" else hidden_gain
                nn.init.normal_(layer.weight, 0.0, gain / layer.weight[0].numel() ** 0.5)
                if layer.bias is not None:
                    nn.init.zeros_(layer.bias)
