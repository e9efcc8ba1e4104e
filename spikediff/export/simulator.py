"""A bit-exact, batched simulator of one network evaluation in Loihi fixed point, independent of Lava.

It steps a compiled network (``export.deployment``) with its Loihi integers in NIR time: at SNN step k every
population adds up the spikes its sources fired at step k (its own at step k - 1 for a self-loop, and d steps
earlier through a NIR Delay of d), then updates with Loihi's integer arithmetic (``loihi_arith``). Lava runs the same
network shifted in time (one step per synapse layer, delay lines on short paths), so the two must agree
spike for spike and bit for bit; the tests check that they do.

Everything is torch, on CPU or CUDA, for many images at once. Synapses from spiking populations run as
float32 convolutions/matmuls: binary spikes times integer weights give integer partial sums no larger than
a neuron's worst-case input, which the quantizer keeps below 2**17, so float32 (24-bit mantissa) is exact in
any summation order. TF32 is switched off while we run, since it would round the weights. The graded host
input is computed once per evaluation in float64 (exact below 2**53). A convolution derived for space-to-depth
layouts runs in its natural form where that sums the same integer products (``natural_conv``).
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch

from . import loihi_arith
from .natural_conv import MergedConv, NaturalConv, merged_kernel, natural_kernel, phase_split
from .plan import CONST, is_merged
from .quantize import encode_input

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
        self.neuron_spikes = {k: np.zeros(pop.size, np.int64) for k, pop in plan.populations.items() if pop.spiking}
        self.active_updates = {k: 0 for k in plan.populations}
        self.input_values = np.zeros(sum(int(np.prod(s)) for s in plan.inputs.values()), np.int64)

    def add(self, res: dict) -> None:
        """Add one ``Simulator.evaluate`` result."""
        for k in self.neuron_spikes:
            self.neuron_spikes[k] += res["neuron_spikes"][k].cpu().numpy()
        for k in self.active_updates:
            self.active_updates[k] += res["active_updates"][k]
        self.input_values += res["input_values"].cpu().numpy()

    def to_dict(self) -> dict:
        return {"neuron_spikes": self.neuron_spikes, "active_updates": self.active_updates,
                "input_values": self.input_values}


class Simulator:
    """A compiled network (``export.deployment.Deployment``) on one device; ``evaluate`` runs a batch.

    Fixed point: Loihi's integer arithmetic (``loihi_arith``), bit for bit what Lava's fixed-point models do.
    Floating point: Lava's float LIF in float64 (u = u (1 - du) + a_in, v = v (1 - dv) + u + bias, spike when
    v > vth, v = 0), the reference for ``spikediff run --backend sim``."""

    def __init__(self, dep, device="cpu", natural: bool = True):
        """``natural=False``: run every convolution dense, derived ones included (for comparison)."""
        self.dep, self.folded, self.fx, self.plan = dep, dep.folded, dep.fixed, dep.plan
        self.device = resolve_device(device)
        p, fx = self.plan, self.fx
        self.order = list(p.populations)  # by latency: a source fires before its targets read it
        self.bias, self.weights = {}, {}
        # s2d-derived conv synapse -> NaturalConv, or PhaseSplitConv where no natural kernel derives it (fixed point
        # only: the same integer products as the dense convolution, without its structural zeros)
        self.natural = {}
        for name in self.order:
            if fx is not None:
                q = fx.populations[name]
                bias = loihi_arith.effective_bias(q.bias_mant, q.bias_exp).reshape(p.shapes[name])
                self.bias[name] = torch.as_tensor(bias, dtype=torch.int64, device=self.device)
            else:
                self.bias[name] = torch.as_tensor(self.folded.bias[name], dtype=torch.float64, device=self.device)
        for f in self.folded.synapses:
            if fx is None:
                form = self._float_form(f) if natural else None
                if form is not None:
                    self.natural[f.syn.name] = form
                    self.weights[f.syn.name] = torch.zeros(0, dtype=torch.float64, device=self.device)  # dtype only
                    continue
                self.weights[f.syn.name] = torch.as_tensor(np.asarray(f.weight, dtype=np.float64), device=self.device)
                continue
            w = fx.weights[f.syn.name]
            if natural and is_merged(w):  # merged taps (a compact graph): computed from them, never made dense
                dtype = self._sum_dtype(f, w.per_channel(np.abs(w.values)).max() if w.size else 0)
                self.natural[f.syn.name] = MergedConv.of(w, dtype, self.device)
                self.weights[f.syn.name] = torch.zeros(0, dtype=dtype, device=self.device)  # its dtype only
                continue
            w = np.asarray(w, dtype=np.float64)
            dtype = self._sum_dtype(f, np.abs(w).reshape(len(w), -1).sum(1).max() if w.size else 0)
            self.weights[f.syn.name] = torch.as_tensor(w, dtype=dtype, device=self.device)
            if natural and f.conv is not None and f.conv.s2d is not None:  # the same integer products, without the zeros
                kernel = natural_kernel(w, f.conv.s2d)
                if kernel is not None:
                    self.natural[f.syn.name] = NaturalConv(torch.as_tensor(kernel, dtype=dtype, device=self.device),
                                                           f.conv.s2d)
                elif np.all(np.asarray(f.conv.dilation) == 1) and f.conv.groups == 1:
                    split = phase_split(w, f.conv.s2d, f.conv.stride, f.conv.padding, dtype, self.device)
                    if split is not None:
                        self.natural[f.syn.name] = split
        self.history = max([s.delay + (1 if s.recurrent else 0) for s in p.synapses] + [0])

    def _sum_dtype(self, f, worst) -> torch.dtype:
        """float32 where it sums synapse ``f``'s integer products exactly (``worst``: its largest |sum| of weights
        into one neuron); graded input (or an unusually large fan-in): float64, exact below 2**53."""
        return torch.float64 if f.syn.src in self.plan.inputs or worst >= FLOAT32_EXACT else torch.float32

    def _float_form(self, f):
        """How the float model runs a derived kernel without its structural zeros, or None (dense). From merged taps
        (held so, or read out of a dense kernel: the same values either way, so a fixed-point compile's bias
        correction, measured against this float model, is the same from a dense or a compact graph), or from
        the natural kernel (a float compile of a compact graph, as Lava's float path runs it)."""
        if f.conv is None or f.conv.s2d is None:
            return None
        w = f.weight
        if is_merged(w):
            return MergedConv.of(w, device=self.device)
        if f.conv.compact:
            return NaturalConv(torch.as_tensor(w.natural, dtype=torch.float64, device=self.device), w.geometry)
        merged = merged_kernel(w, f.conv.s2d)
        return None if merged is None else MergedConv.of(merged, device=self.device)

    def _deliver(self, f, x: torch.Tensor) -> torch.Tensor:
        w = self.weights[f.syn.name]
        x = x.reshape(len(x), *f.src_shape).to(w.dtype)
        if f.syn.name in self.natural:
            out = self.natural[f.syn.name](x)
        elif f.conv is not None:
            c = f.conv
            out = torch.nn.functional.conv2d(x, w, None, c.stride, c.padding, c.dilation, c.groups)
        else:
            out = x.reshape(len(x), -1) @ w.T
        out = out.reshape(len(x), *f.dst_shape)
        # integer weights and inputs: the sums are exact integers already
        return out.long() if self.fx is not None else out

    def encode(self, name: str, x) -> torch.Tensor:
        """Host input as the network receives it: graded integers in fixed point, float64 otherwise."""
        if self.fx is not None:
            return torch.as_tensor(encode_input(np.asarray(x), self.fx.input_scales[name]), dtype=torch.int64,
                                   device=self.device)
        return torch.as_tensor(np.array(x, dtype=np.float64), device=self.device)  # a copy: x may be a read-only view

    def _update(self, name, u, v, a_in):
        """(u, v, spikes or None) of one population's step."""
        pop = self.plan.populations[name]
        if self.fx is not None:
            q = self.fx.populations[name]
            if not pop.spiking:
                u, v = loihi_arith.cuba_update(u, v, a_in, q.du, q.dv, self.bias[name])
                return u, v, None
            return loihi_arith.lif_step(u, v, a_in, q.du, q.dv, q.vth, self.bias[name])
        du, dv = self.folded.scalar(name, "du"), self.folded.scalar(name, "dv")
        u = u * (1 - du) + a_in
        v = v * (1 - dv) + u + self.bias[name]
        if not pop.spiking:
            return u, v, None
        spikes = v > self.folded.scalar(name, "v_threshold")
        return u, torch.where(spikes, torch.zeros_like(v), v), spikes

    @torch.no_grad()
    def evaluate(self, inputs, num_steps: int | None = None, record: dict | None = None,
                 track_peak: bool = False) -> dict:
        """Run a batch. ``inputs``: (N, *input shape) constant over the T steps, (N, T, *input shape), or
        {Input: either}; float, NIR layout. ``record``: {population: flat neuron indices} whose spikes of image
        0 are returned per step; ``track_peak``: also the largest |a_in| per population.

        Returns, as tensors on the device: ``readout_int`` (N, T, *shape) of the one readout, if any (fixed
        point: integers; float: the state); ``states`` {non-spiking output: (N, T, *shape)}; ``output_spikes``
        {spiking output: (N, T, *shape)}; ``spikes`` {population: (N, T) counts}; ``neuron_spikes``
        {population: (neurons,) summed over the batch and T}; ``active_updates`` {population: updates of
        neurons with input or a nonzero state}; ``input_values`` (input size,): nonzero graded values sent
        per input neuron (summed over the Inputs' flat positions, first Input first); ``max_input``
        {population: max |a_in|}; ``raster`` {population: (T, len(indices))}."""
        from ..export.deployment import input_series

        p = self.plan
        t_steps = int(num_steps or self.dep.num_steps)
        if not isinstance(inputs, dict):
            inputs = {p.input: inputs}
        series = {k: input_series(np.asarray(v, dtype=np.float64), p.inputs[k], t_steps, k) for k, v in inputs.items()}
        missing = set(p.inputs) - set(series)
        if missing:
            raise ValueError(f"inputs missing for {sorted(missing)}")
        n = len(next(iter(series.values())))
        int_type = torch.int64 if self.fx is not None else torch.float64
        encoded = {k: self.encode(k, v) for k, v in series.items()}  # (N, T, *shape)
        varying = {k: bool((v != v[:, :1]).any()) for k, v in encoded.items()}
        zeros = {k: torch.zeros((n, *p.shapes[k]), dtype=int_type, device=self.device) for k in self.order}
        u, v = dict(zeros), dict(zeros)
        past = {k: [] for k in self.order}  # spikes of earlier steps, newest last (for delays and self-loops)
        spiking = [k for k in self.order if p.populations[k].spiking]
        counts = {k: torch.zeros((n, t_steps), dtype=torch.int64, device=self.device) for k in spiking}
        totals = {k: torch.zeros(p.populations[k].size, dtype=torch.int64, device=self.device) for k in spiking}
        busy = {k: torch.zeros((), dtype=torch.int64, device=self.device) for k in self.order}
        raster = {k: [] for k in (record or {})}
        peak = {k: torch.zeros((), dtype=int_type, device=self.device) for k in self.order}
        states = {k: [] for k in p.outputs.values() if not p.populations[k].spiking}
        out_spikes = {k: [] for k in p.outputs.values() if p.populations[k].spiking}
        ones = torch.ones((n, 1), device=self.device)
        with _no_tf32():
            constant = {}
            for f in self.folded.synapses:
                if f.syn.src in p.inputs and not varying[f.syn.src]:
                    constant[f.syn.name] = self._deliver(f, encoded[f.syn.src][:, 0])
                elif f.syn.src == CONST:
                    constant[f.syn.name] = self._deliver(f, ones)
            for step in range(t_steps):
                now: dict = {}
                for name in self.order:
                    a_in = None
                    for f in self.folded.incoming(name):
                        src = f.syn.src
                        if f.syn.name in constant:
                            if f.syn.src in p.inputs and step < f.syn.delay:
                                continue  # a NIR Delay: the input has not arrived yet
                            got = constant[f.syn.name]
                        elif src in p.inputs:
                            if step < f.syn.delay:
                                continue
                            got = self._deliver(f, encoded[src][:, step - f.syn.delay])
                        else:
                            back = f.syn.delay + (1 if f.syn.recurrent else 0)
                            if back == 0:
                                spk = now[src]
                            elif step - back >= 0:
                                spk = past[src][-back]
                            else:
                                continue  # nothing sent yet
                            got = self._deliver(f, spk)
                        a_in = got if a_in is None else a_in + got
                    if a_in is None:
                        a_in = zeros[name]
                    if track_peak and a_in.numel():
                        peak[name] = torch.maximum(peak[name], a_in.abs().max())
                    # an "active" update: the neuron has input or state to work on (otherwise it stays at rest)
                    busy[name] += ((a_in != 0) | (u[name] != 0) | (v[name] != 0)).sum()
                    u[name], v[name], spk = self._update(name, u[name], v[name], a_in)
                    if name in states:
                        states[name].append(v[name])
                    if spk is None:
                        continue
                    now[name] = spk
                    flat = spk.reshape(n, -1)
                    counts[name][:, step] = flat.sum(1)
                    totals[name] += flat.sum(0)
                    if name in out_spikes:
                        out_spikes[name].append(spk)
                    if name in raster:
                        raster[name].append(flat[0, torch.as_tensor(record[name], device=self.device)])
                for name, spk in now.items():
                    past[name] = (past[name] + [spk])[-max(1, self.history):]
        values = torch.cat([(e != 0).sum(1).reshape(n, -1) for e in encoded.values()], dim=1).sum(0)
        states = {k: torch.stack(s, 1) for k, s in states.items()}
        # the hardware form's readout sums its state over the T steps in a 24-bit voltage (runtime.build)
        sum_peak = {k: float(s.cumsum(1).abs().max()) if s.numel() else 0.0 for k, s in states.items()}
        readouts = list(states)
        return {"readout_int": states[readouts[0]] if len(readouts) == 1 else None, "states": states,
                "output_spikes": {k: torch.stack(s, 1) for k, s in out_spikes.items()},
                "spikes": counts, "neuron_spikes": totals,
                "active_updates": {k: int(b) for k, b in busy.items()},
                "input_values": values,
                "max_input": {k: float(v_) for k, v_ in peak.items()}, "readout_sum_peak": sum_peak,
                "raster": {k: torch.stack(r) for k, r in raster.items()}}


def evaluate(dep, inputs, device="cpu") -> dict:
    """One batch evaluation, as numpy: ``{"readout": (N, T, *readout shape) in float units, "readout_int",
    "outputs": {output population: (N, T, *shape)} (states in float units, or spikes), "spikes": {population:
    (N, T)}, "max_input": {population: max |a_in|}}``."""
    res = Simulator(dep, device).evaluate(inputs, track_peak=True)
    outputs = {k: s.cpu().numpy() / dep.readout_scale(k) for k, s in res["states"].items()}
    outputs.update({k: s.cpu().numpy().astype(np.float64) for k, s in res["output_spikes"].items()})
    out = {"outputs": outputs, "spikes": {k: c.cpu().numpy() for k, c in res["spikes"].items()},
           "max_input": res["max_input"]}
    if res["readout_int"] is not None:
        (readout,) = res["states"]
        out["readout_int"] = res["readout_int"].cpu().numpy()
        out["readout"] = outputs[readout]
    return out
