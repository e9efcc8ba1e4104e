"""A bit-exact reference of one network evaluation in Loihi fixed point, batched, independent of Lava.

It steps the folded NIR graph (``export.folded``) with the integers of ``export.fixed_point`` in NIR time:
at SNN step k every population adds up the spikes its sources fired at step k (its own at step k - 1
for a self-loop), then updates with Loihi's integer arithmetic (``loihi_arith``). Lava runs the same
network shifted in time (one step per synapse layer, delay lines on short paths), so the two must agree
spike for spike and bit for bit; the tests check that they do.
"""

from __future__ import annotations

import numpy as np

from ..export.fixed_point import encode_input
from ..export.folded import synaptic_input
from . import loihi_arith


def evaluate(folded, fx, inputs: np.ndarray, num_steps: int) -> dict:
    """``inputs`` (N, *input shape) in float; returns ``{"readout": (N, T, *readout shape) in float units,
    "readout_int": the integer states, "spikes": {population: (N, T)}, "max_input": {population: max |a_in|}}``."""
    p = folded.plan
    x_int = encode_input(inputs, fx.input_scale).astype(np.int64)
    n = len(x_int)
    order = sorted(p.populations, key=lambda name: p.latency[name])
    u = {k: np.zeros((n, *p.shapes[k]), np.int64) for k in order}
    v = {k: np.zeros((n, *p.shapes[k]), np.int64) for k in order}
    spikes = {k: np.zeros((n, *p.shapes[k]), bool) for k in order}
    counts = {k: np.zeros((n, num_steps), np.int64) for k in order if k != p.readout}
    peak = {k: 0 for k in order}
    readout = []

    def delivered(f, x):
        w = fx.weights[f.syn.name]
        return synaptic_input(f, x.reshape(n, *p.shapes[f.syn.src]), w).round().astype(np.int64)

    # The host input is the same at every step: what it delivers is computed once.
    constant = {f.syn.name: delivered(f, x_int) for f in folded.synapses if f.syn.src == p.input}
    for step in range(num_steps):
        for name in order:  # by latency: a source has fired this step before its targets read it
            q = fx.populations[name]
            a_in = np.zeros((n, *p.shapes[name]), np.int64)
            for f in folded.incoming(name):
                # (a self-loop reads the population's own spikes before they are updated: those of step - 1)
                got = constant[f.syn.name] if f.syn.src == p.input else delivered(f, spikes[f.syn.src])
                a_in = a_in + got.reshape(a_in.shape)
            peak[name] = max(peak[name], int(np.abs(a_in).max()) if a_in.size else 0)
            if name == p.readout:
                u[name], v[name] = loihi_arith.cuba_update(u[name], v[name], a_in, q.du, q.dv, q.bias_mant, q.bias_exp)
                readout.append(v[name].copy())
            else:
                u[name], v[name], spikes[name] = loihi_arith.lif_step(u[name], v[name], a_in, q.du, q.dv, q.vth,
                                                                        q.bias_mant, q.bias_exp)
                counts[name][:, step] = spikes[name].reshape(n, -1).sum(1)
    readout_int = np.stack(readout, 1)
    return {"readout": readout_int / fx.readout_scale(p.readout), "readout_int": readout_int, "spikes": counts,
            "max_input": peak}
