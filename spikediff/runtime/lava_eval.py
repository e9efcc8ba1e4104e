"""Evaluate a built Lava network on fixed inputs: one evaluation per input, pipelined in one Lava run.

This is the building block the DDIM sampler process extends (there the input of a window depends on
the previous window's output). Here the inputs are known up front, so a ring-buffer source plays them.
"""

from __future__ import annotations

import numpy as np

from .. import SpikediffError


def run_windows(net, inputs: np.ndarray, record_spikes: bool = False, target: str = "sim") -> dict:
    """Run ``len(inputs)`` network evaluations (NIR-shaped host inputs) in one Lava run.

    Returns ``{"readout": (N, T, *readout_shape)}`` with the readout state at each of the T steps, and
    with ``record_spikes`` also ``{"spikes": {population: (N, T) spike counts}}``.
    """
    from .. import lava_compat
    from ..export.nir_to_lava import to_lava_layout
    from .session import lava_session, run_config

    lava_compat.import_lava()
    from lava.proc.io.sink import RingBuffer as Sink
    from lava.proc.io.source import RingBuffer as Source

    inputs = np.asarray(inputs, dtype=np.float64)
    n, w, t, period = len(inputs), net.window, net.num_steps, net.period
    total = (n - 1) * period + w
    if inputs.ndim < 2:
        raise SpikediffError(f"inputs: expected (N, *input shape), got shape {inputs.shape}")
    data = np.zeros((*net.input_shape_lava, total), dtype=np.float64 if net.fixed_point is None else np.int32)
    for i, x in enumerate(inputs):
        lava_x = to_lava_layout(x, x.shape)
        if lava_x.shape != tuple(net.input_shape_lava):
            raise SpikediffError(f"input {i}: shape {x.shape} does not fit the network input")
        data[..., i * period: i * period + t] = net.encode_input(lava_x)[..., None]
    source = Source(data=data)
    for port in net.input_ports:
        source.s_out.connect(port)
    sink = Sink(shape=net.readout.v_out.shape, buffer=total)
    net.readout.v_out.connect(sink.a_in)
    spike_sinks = {}
    if record_spikes:
        for name, (proc, _count) in net.populations.items():
            spike_sinks[name] = Sink(shape=proc.s_out.shape, buffer=total)
            proc.s_out.connect(spike_sinks[name].a_in)
    run_cfg, _where = run_config(target, "floating_pt" if net.fixed_point is None else "fixed_pt")
    with lava_session(source, run_cfg) as run:
        run(total)
        v = sink.data.get()
        spikes = {name: s.data.get() for name, s in spike_sinks.items()}
    v = np.moveaxis(v, -1, 0)
    lat, r = net.latency, net.readout_latency
    result = {"readout": np.stack([net.readout_to_nir(v[i * period + r: i * period + r + t]) for i in range(n)])}
    if record_spikes:
        result["spikes"] = {}
        for name, s in spikes.items():
            s = np.moveaxis(s, -1, 0).reshape(total, -1).sum(-1)
            result["spikes"][name] = np.stack([s[i * period + lat[name]: i * period + lat[name] + t] for i in range(n)])
    return result
