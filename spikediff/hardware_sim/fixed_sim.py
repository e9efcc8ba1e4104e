"""A bit-exact, batched simulator of one network evaluation in Loihi fixed point, independent of Lava.

It steps the folded NIR graph (``export.folded``) with the integers of ``export.fixed_point`` in NIR time:
at SNN step k every population adds up the spikes its sources fired at step k (its own at step k - 1
for a self-loop), then updates with Loihi's integer arithmetic (``loihi_arith``). Lava runs the same
network shifted in time (one step per synapse layer, delay lines on short paths), so the two must agree
spike for spike and bit for bit; the tests check that they do.

Everything is torch, on CPU or CUDA, for many images at once. Synapses from spiking populations run as
float32 convolutions/matmuls: binary spikes times integer weights give integer partial sums no larger than
a neuron's worst-case input, which the quantizer keeps below 2**17, so float32 (24-bit mantissa) is exact in
any summation order. TF32 is switched off while we run, since it would round the weights. The graded host
input is computed once per evaluation in float64 (exact below 2**53).
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch

from ..export.fixed_point import encode_input
from . import loihi_arith

FLOAT32_EXACT = 1 << 24


def resolve_device(name: str | torch.device | None) -> torch.device:
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@contextmanager
def _no_tf32():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


class EventTally:
    """A run's event totals over its batches, as ``events.count_events`` reads them: spikes per neuron,
    active neuron updates per population, nonzero graded input values per input neuron."""

    def __init__(self, plan):
        self.neuron_spikes = {k: np.zeros(int(np.prod(plan.shapes[k])), np.int64)
                              for k in plan.populations if k != plan.readout}
        self.active_updates = {k: 0 for k in plan.populations}
        self.input_values = np.zeros(int(np.prod(plan.shapes[plan.input])), np.int64)

    def add(self, res: dict) -> None:
        """Add one ``FixedNetwork.evaluate`` result."""
        for k in self.neuron_spikes:
            self.neuron_spikes[k] += res["neuron_spikes"][k].cpu().numpy()
        for k in self.active_updates:
            self.active_updates[k] += res["active_updates"][k]
        self.input_values += res["input_values"].cpu().numpy()

    def to_dict(self) -> dict:
        return {"neuron_spikes": self.neuron_spikes, "active_updates": self.active_updates,
                "input_values": self.input_values}


class FixedNetwork:
    """The folded network's Loihi integers as tensors on one device; ``evaluate`` runs a batch of inputs."""

    def __init__(self, folded, fx, device="cpu"):
        self.folded, self.fx, self.plan = folded, fx, folded.plan
        self.device = resolve_device(device)
        p = self.plan
        self.order = sorted(p.populations, key=lambda name: p.latency[name])
        self.bias = {}
        for name in self.order:
            q = fx.populations[name]
            bias = loihi_arith.effective_bias(q.bias_mant, q.bias_exp).reshape(p.shapes[name])
            self.bias[name] = torch.as_tensor(bias, dtype=torch.int64, device=self.device)
        self.weights = {}
        for f in folded.synapses:
            w = np.asarray(fx.weights[f.syn.name], dtype=np.float64)
            worst = np.abs(w).reshape(len(w), -1).sum(1).max() if w.size else 0
            # graded input (or an unusually large fan-in): float64, exact below 2**53
            dtype = torch.float64 if f.syn.src == p.input or worst >= FLOAT32_EXACT else torch.float32
            self.weights[f.syn.name] = torch.as_tensor(w, dtype=dtype, device=self.device)

    def _deliver(self, f, x: torch.Tensor) -> torch.Tensor:
        w = self.weights[f.syn.name]
        x = x.reshape(len(x), *self.plan.shapes[f.syn.src]).to(w.dtype)
        if f.conv is not None:
            c = f.conv
            out = torch.nn.functional.conv2d(x, w, None, c.stride, c.padding, c.dilation, c.groups)
        else:
            out = x.reshape(len(x), -1) @ w.T
        return out.long()  # integer weights and inputs: the sums are exact integers already

    @torch.no_grad()
    def evaluate(self, inputs, num_steps: int, record: dict | None = None, track_peak: bool = False) -> dict:
        """Run a batch. ``inputs`` (N, *input shape), float; ``record``: {population: flat neuron indices}
        whose spikes of image 0 are returned per step; ``track_peak``: also the largest |a_in| per population.

        Returns, as tensors on the device: ``readout_int`` (N, T, *shape); ``spikes`` {population: (N, T)
        counts}; ``neuron_spikes`` {population: (neurons,) summed over the batch and T}; ``active_updates``
        {population: updates of neurons with input or a nonzero state}; ``input_values`` (input size,):
        nonzero graded values sent per input neuron; ``max_input`` {population: max |a_in|}; ``raster``
        {population: (T, len(indices))}."""
        p, fx = self.plan, self.fx
        x_int = torch.as_tensor(encode_input(np.asarray(inputs), fx.input_scale), dtype=torch.int64,
                                device=self.device)
        n = len(x_int)
        zeros = {k: torch.zeros((n, *p.shapes[k]), dtype=torch.int64, device=self.device) for k in self.order}
        u, v = dict(zeros), dict(zeros)
        spikes = {k: torch.zeros((n, *p.shapes[k]), dtype=torch.bool, device=self.device) for k in self.order}
        counts = {k: torch.zeros((n, num_steps), dtype=torch.int64, device=self.device)
                  for k in self.order if k != p.readout}
        totals = {k: torch.zeros(int(np.prod(p.shapes[k])), dtype=torch.int64, device=self.device) for k in counts}
        busy = {k: torch.zeros((), dtype=torch.int64, device=self.device) for k in self.order}
        raster = {k: [] for k in (record or {})}
        peak = {k: torch.zeros((), dtype=torch.int64, device=self.device) for k in self.order}
        readout = []
        with _no_tf32():
            # the host input is the same at every step: what it delivers is computed once
            constant = {f.syn.name: self._deliver(f, x_int) for f in self.folded.synapses if f.syn.src == p.input}
            for step in range(num_steps):
                for name in self.order:  # by latency: a source has fired this step before its targets read it
                    q = fx.populations[name]
                    a_in = None
                    for f in self.folded.incoming(name):
                        # a self-loop reads the population's own spikes before the update: those of step - 1
                        got = constant[f.syn.name] if f.syn.src == p.input else self._deliver(f, spikes[f.syn.src])
                        got = got.reshape(n, *p.shapes[name])
                        a_in = got if a_in is None else a_in + got
                    if a_in is None:
                        a_in = zeros[name]
                    if track_peak and a_in.numel():
                        peak[name] = torch.maximum(peak[name], a_in.abs().max())
                    # an "active" update: the neuron has input or state to work on (otherwise it stays at rest)
                    busy[name] += ((a_in | u[name] | v[name]) != 0).sum()
                    if name == p.readout:
                        u[name], v[name] = loihi_arith.cuba_update(u[name], v[name], a_in, q.du, q.dv, self.bias[name])
                        readout.append(v[name])
                        continue
                    u[name], v[name], spikes[name] = loihi_arith.lif_step(u[name], v[name], a_in, q.du, q.dv, q.vth,
                                                                            self.bias[name])
                    flat = spikes[name].reshape(n, -1)
                    counts[name][:, step] = flat.sum(1)
                    totals[name] += flat.sum(0)
                    if name in raster:
                        raster[name].append(flat[0, torch.as_tensor(record[name], device=self.device)])
        return {"readout_int": torch.stack(readout, 1), "spikes": counts, "neuron_spikes": totals,
                "active_updates": {k: int(b) for k, b in busy.items()},
                "input_values": (x_int != 0).sum(0).reshape(-1) * num_steps,
                "max_input": {k: int(v_) for k, v_ in peak.items()},
                "raster": {k: torch.stack(r) for k, r in raster.items()}}


def evaluate(folded, fx, inputs: np.ndarray, num_steps: int, device="cpu") -> dict:
    """One batch evaluation, as numpy: ``{"readout": (N, T, *readout shape) in float units, "readout_int",
    "spikes": {population: (N, T)}, "max_input": {population: max |a_in|}}``."""
    res = FixedNetwork(folded, fx, device).evaluate(inputs, num_steps, track_peak=True)
    readout_int = res["readout_int"].cpu().numpy()
    return {"readout": readout_int / fx.readout_scale(folded.plan.readout), "readout_int": readout_int,
            "spikes": {k: c.cpu().numpy() for k, c in res["spikes"].items()}, "max_input": res["max_input"]}
