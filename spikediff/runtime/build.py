"""A ``Deployment`` -> Lava processes, floating point or Loihi fixed point, exact up to a time shift.

The compiled deployment says everything: populations and their discrete parameters (or integers), the
composed synapses, latencies and the reset period (``export.deployment``). Here each becomes a Lava
process: Lava's ``Dense`` and ``Conv`` (``Conv64`` in floating point, see ``lava_processes``), ``LIFReset``
(``LIFClear`` for a population with a self-loop), a ``Readout`` for a non-spiking output, a ``SpikeDelay`` on a
short path, a plain Lava ``LIF`` that fires at every step for the constant currents into current-based neurons
(``export.fold``); in fixed point, sequential chains become lava-dl netx networks (``export.netx_hdf5``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..export.layout import (
    chw_to_whc_perm,
    conv_weight_to_lava,
    dense_rows_cols,
    from_lava_layout,
    lava_shape,
    population_perms,
    to_lava_layout,
)
from ..export.plan import CONST
from ..export.quantize import VTH_MAX


@dataclass
class LavaNetwork:
    """A built Lava graph: connect sources to ``input_ports``, read ``outputs``."""

    deployment: object
    processes: dict
    input_ports: dict  # Input -> [InPorts of the synapses it feeds], each expecting its Lava shape
    outputs: dict  # population -> its process (a Readout: ``v_out`` sends its state; a spiking one: ``s_out``)
    perms: dict  # population -> Lava flat index -> NIR flat index (None: identity or image)
    populations: dict  # spiking population -> (Lava process, number of neurons)
    synapse_fanout: dict  # population -> synaptic fan-out per spike (for counters)
    netx_chains: list = field(default_factory=list)  # populations built as lava-dl netx networks, per chain
    accumulating: set = field(default_factory=set)  # readouts built as on-chip neurons that sum their state
    hardware: bool = False  # built in the hardware form (see ``build``)

    @property
    def plan(self):
        return self.deployment.plan

    @property
    def window(self) -> int:
        return self.deployment.timing.window

    @property
    def period(self) -> int:
        return self.deployment.timing.period

    @property
    def num_steps(self) -> int:
        return self.deployment.timing.num_steps

    @property
    def latency(self) -> dict:
        return self.deployment.plan.latency

    @property
    def fixed_point(self):
        return self.deployment.fixed

    # the one input and the one non-spiking readout of a sampler's network
    @property
    def input_shape_lava(self) -> tuple:
        return lava_shape(self.plan.inputs[self.plan.input])

    @property
    def readout(self):
        return self.outputs[self.plan.readout]

    @property
    def readout_latency(self) -> int:
        return self.latency[self.plan.readout]

    @property
    def readout_shape(self) -> tuple:
        return self.plan.shapes[self.plan.readout]

    @property
    def readout_perm(self):
        return self.perms[self.plan.readout]

    @property
    def input_scale(self) -> int:
        """Host input is sent as round(x * input_scale) (1 and unrounded in float)."""
        return self.deployment.input_scale()

    @property
    def readout_scale(self) -> int:
        return self.deployment.readout_scale()

    def readout_to_nir(self, v_lava: np.ndarray, population: str | None = None) -> np.ndarray:
        """Lava readout state(s) (..., *lava shape) -> NIR order (..., *shape), in float units."""
        pop = population or self.plan.readout
        return from_lava_layout(np.asarray(v_lava) / self.deployment.readout_scale(pop), self.plan.shapes[pop],
                                self.perms[pop])

    def encode_input(self, x_lava: np.ndarray, name: str | None = None) -> np.ndarray:
        """Host input (Lava layout) as sent: graded integers in fixed point."""
        from ..export.quantize import encode_input

        return x_lava if self.fixed_point is None else encode_input(x_lava, self.deployment.input_scale(name))


MAX_SYNAPTIC_DELAY = 62  # Loihi 2 synapses delay by 6 bits; 62 leaves the top value free (lava-dl's limit)


def build(dep, netx: bool = True, netx_dir=None, hardware: bool | None = None) -> LavaNetwork:
    """Lava processes for deployment ``dep``, not yet connected to a source. In fixed point, sequential
    chains become lava-dl netx networks unless ``netx=False``; their HDF5 files are kept in ``netx_dir`` when
    one is given.

    ``hardware`` (default: on in fixed point) builds the form whose neurons and synapses all have Loihi 2
    models: a readout that is an LI neuron becomes a Lava ``LIFReset`` whose current is the readout's state
    and whose voltage sums it over the T steps (no leak, a threshold it never reaches), read once per
    evaluation by the host (``HostLoop``; ``StateReader`` per step in ``run_windows``); a short path's wait is
    a synaptic delay (``DelayDense``, or ``DelaySparse`` holding a convolution's connections) instead of a
    ``SpikeDelay`` process. It computes the same integers as the plain form, so it equals it and the
    simulator bit for bit (the readout's sum stays inside 24 bits; the simulator checks that)."""
    from .. import lava_compat

    lava_compat.import_lava()  # before any Lava module: it makes Lava importable on Python 3.11
    from lava.proc.conv.process import Conv
    from lava.proc.dense.process import DelayDense, Dense
    from lava.proc.lif.process import LIF, LIFReset
    from lava.proc.sparse.process import DelaySparse

    from . import lava_processes as lp

    folded, p, fx, period = dep.folded, dep.plan, dep.fixed, dep.timing.period
    shapes = p.shapes
    hardware = fx is not None if hardware is None else bool(hardware and fx is not None)
    looped = p.recurrent
    perm = population_perms(folded)

    def to_lava(name, arr):
        out = to_lava_layout(arr, shapes[name], perm[name])
        return out.astype(np.int64) if fx is not None else out

    procs: dict = {}
    synapse_procs = []
    fanout: dict = {}
    chains = _netx_chains(dep, perm, procs, netx_dir) if fx is not None and netx else []
    in_chain = {f.syn.name for chain in chains for f in chain[0]}
    synaptic_delay: dict = {}
    for f in folded.synapses:
        s = f.syn
        fanout[s.src] = fanout.get(s.src, 0) + _fanout(f)
        if s.name in in_chain:
            continue
        w_nir = np.asarray(fx.weights[s.name]) if fx is not None else f.weight  # Lava holds fixed point dense
        bits = 24 if s.src in p.inputs else 0
        wait = _alignment(p, s)
        if hardware and s.delay == 0 and 0 < wait <= MAX_SYNAPTIC_DELAY:  # the wait: the synapses' own delay
            if f.conv is not None:
                rows, cols = _lava_order(shapes[s.dst], perm[s.dst]), _lava_order(shapes[s.src], perm.get(s.src))
                matrix = f.conv.with_weight(np.asarray(w_nir, dtype=np.float64)).matrix(shapes[s.src])
                weights = matrix[rows][:, cols].astype(np.int32)
                # the delay on each synapse, not a scalar: Lava would fill every (out, in) pair with it
                delays = weights.astype(np.int64)  # Lava checks for dtype int
                delays.data[:] = wait
                proc = DelaySparse(weights=weights, delays=delays, name=s.name)
            else:
                rows, cols = dense_rows_cols(f, perm, shapes)
                proc = DelayDense(weights=np.asarray(w_nir)[rows][:, cols], delays=wait, name=s.name)
            reshape = len(shapes[s.dst]) == 3
            target = proc.a_out.reshape(lava_shape(shapes[s.dst])) if reshape else proc.a_out
            synaptic_delay[s.name] = wait
            procs[s.name] = proc
            synapse_procs.append((s, proc, target))
            continue
        if f.conv is not None:
            spec = f.conv
            out_shape = lava_shape(spec.out_shape(shapes[s.src]))
            if fx is None:  # float64 throughout (see lava_processes.Conv64)
                natural = w_nir.geometry.to_metadata() if spec.compact else None
                proc = lp.Conv64(weight=w_nir.natural if spec.compact else w_nir, input_shape=lava_shape(shapes[s.src]),
                                 output_shape=out_shape, stride=spec.stride, padding=spec.padding,
                                 dilation=spec.dilation, groups=spec.groups, natural=natural, name=s.name)
            else:
                proc = Conv(weight=conv_weight_to_lava(w_nir), input_shape=lava_shape(shapes[s.src]),
                            padding=spec.padding[::-1], stride=spec.stride[::-1], dilation=spec.dilation[::-1],
                            groups=spec.groups, num_message_bits=bits, name=s.name)
            target = proc.a_out.flatten() if s.flat_out else proc.a_out
        else:
            rows, cols = dense_rows_cols(f, perm, shapes)
            proc = Dense(weights=np.asarray(w_nir)[rows][:, cols], num_message_bits=bits, name=s.name)
            target = proc.a_out.reshape(lava_shape(shapes[s.dst])) if len(shapes[s.dst]) == 3 else proc.a_out
        procs[s.name] = proc
        synapse_procs.append((s, proc, target))

    outputs = set(p.outputs.values())
    accumulating: set = set()
    for name, n in folded.neurons.items():
        if name in procs:  # built inside a netx chain
            continue
        offset = (p.latency[name] + 1) % period  # Lava's first step is time_step 1
        shape = lava_shape(shapes[name])
        if fx is not None:
            q = fx.populations[name]
            params = dict(du=q.du, dv=q.dv, bias_mant=to_lava(name, q.bias_mant), bias_exp=to_lava(name, q.bias_exp))
            vth = q.vth
        else:
            params = dict(du=folded.scalar(name, "du"), dv=folded.scalar(name, "dv"),
                          bias_mant=to_lava(name, folded.bias[name]), bias_exp=0)
            vth = folded.scalar(name, "v_threshold") if n.spiking else None
        if not n.spiking and hardware and _sums_on_chip(folded, fx, name):
            # the readout's state as the current of a neuron that sums it: du = the readout's decay, dv = 0
            q = fx.populations[name]
            proc = LIFReset(shape=shape, du=q.dv - 1, dv=0, vth=VTH_MAX, bias_mant=0, bias_exp=0,
                            reset_interval=period, reset_offset=offset, name=name)
            accumulating.add(name)
        elif not n.spiking:
            proc = lp.Readout(shape=shape, du=params["du"], dv=params["dv"], bias=params["bias_mant"],
                              bias_exp=params["bias_exp"], reset_interval=period, reset_offset=offset, name=name)
        elif name in looped:  # cleared one step before its first input: see export.deployment
            proc = lp.LIFClear(shape=shape, vth=vth, reset_interval=period, reset_offset=(offset - 1) % period,
                               name=name, **params)
        else:
            proc = LIFReset(shape=shape, vth=vth, reset_interval=period, reset_offset=offset, name=name, **params)
        procs[name] = proc

    if folded.has_const:  # fires at every step: v = bias > vth, whatever the decay (see export.fold)
        if fx is not None:
            procs[CONST] = LIF(shape=(1,), du=4095, dv=4095, vth=0, bias_mant=1, bias_exp=0, name=CONST)
        else:
            procs[CONST] = LIF(shape=(1,), du=1.0, dv=1.0, vth=0.0, bias_mant=1.0, name=CONST)

    for s, _proc, target in synapse_procs:
        target.connect(procs[s.dst].a_in)
    inputs = [(s, proc.s_in) for s, proc, _target in synapse_procs]
    inputs += [(chain[0].syn, net.inp) for chain, net in chains]
    input_ports: dict = {name: [] for name in p.inputs}
    for s, in_port in inputs:
        if s.src in p.inputs:
            delay = p.latency[s.dst] - 1 + s.delay
            if delay > 0:  # a layer deeper than the first reads the input late
                reset = dict(reset_interval=period, reset_offset=1 % period) if s.delay else {}
                line = lp.GradedDelay(shape=lava_shape(shapes[s.src]), delay=delay, name=f"{s.name}_delay", **reset)
                procs[line.name] = line
                line.s_out.connect(in_port)
                in_port = line.s_in
            input_ports[s.src].append(in_port)
            continue
        src_port = procs[s.src].s_out
        if s.src == CONST:  # constant in time: no alignment needed
            src_port.connect(in_port)
            continue
        if s.name in synaptic_delay:  # the synapses wait themselves; a sparse matrix reads flat spikes
            (src_port.flatten() if len(shapes[s.src]) > 1 else src_port).connect(in_port)
            continue
        delay = _alignment(p, s)
        if delay > 0:
            reset = {}
            if s.delay:  # a NIR Delay: cleared before what it sends can reach the evaluation's first step
                first = p.latency[s.src] + 1 if not s.recurrent else p.latency[s.src]
                reset = dict(reset_interval=period, reset_offset=first % period)
            line = lp.SpikeDelay(shape=lava_shape(shapes[s.src]), delay=delay, name=f"{s.name}_delay", **reset)
            procs[line.name] = line
            src_port.connect(line.s_in)
            src_port = line.s_out
        (src_port.flatten() if s.flat_in else src_port).connect(in_port)

    return LavaNetwork(
        deployment=dep, processes=procs, input_ports=input_ports,
        outputs={pop: procs[pop] for pop in outputs}, perms=perm,
        populations={n: (procs[n], int(np.prod(shapes[n]))) for n, pop in p.populations.items() if pop.spiking},
        synapse_fanout=fanout, netx_chains=[[f.syn.dst for f in chain] for chain, _net in chains],
        accumulating=accumulating, hardware=hardware)


def _alignment(p, s) -> int:
    """Steps a synapse's spikes must wait beyond Lava's one step: the latency gap of the paths that meet at
    its destination, plus any NIR Delay (0 for the host input and the constant source, handled apart)."""
    if s.src in p.inputs or s.src == CONST:
        return 0
    return (p.latency[s.dst] - p.latency[s.src] - 1 if not s.recurrent else 0) + s.delay


def _lava_order(shape: tuple, perm) -> np.ndarray:
    """Lava flat index -> NIR flat index of a population: an image's (W, H, C) order, a flat population's own
    order (``population_perms``), else the identity."""
    if len(shape) == 3:
        return chw_to_whc_perm(shape)
    return perm if perm is not None else np.arange(int(np.prod(shape)))


def _sums_on_chip(folded, fx, name: str) -> bool:
    """Whether a non-spiking readout can be an on-chip neuron that sums its state: an LI (no current of its
    own, so its state can be a LIF's current), with a decay, and no bias (Lava's bias enters the voltage)."""
    n, q = folded.neurons[name], fx.populations[name]
    return bool(np.all(np.asarray(n.du) == 1) and q.dv >= 1 and not np.any(q.bias_mant))


def _netx_chains(dep, perm: dict, procs: dict, netx_dir) -> list:
    """Write and load a netx network per sequential chain; their neuron processes go into ``procs``."""
    import tempfile

    from .. import lava_compat
    from ..export.netx_hdf5 import write_chains

    lava_compat.import_netx()
    from lava.lib.dl.netx import hdf5

    p, period = dep.plan, dep.timing.period
    built = []
    with tempfile.TemporaryDirectory() as tmp:
        for chain, path in write_chains(dep, netx_dir or tmp):
            first = chain[0].syn
            net = hdf5.Network(net_config=str(path), input_message_bits=24 if first.src in p.inputs else 0,
                               input_shape=lava_shape(p.shapes[first.src]) if chain[0].conv is not None else None,
                               reset_interval=period, reset_offset=p.latency[first.dst])
            net.net_config.f.close()  # netx has read everything it needs; the file may go
            for f, layer in zip(chain, net.layers):
                procs[f.syn.dst] = layer.neuron
            built.append((chain, net))
    return built


def _fanout(f) -> int:
    """Targets per input spike of a folded synapse: a dense one's nonzero weights per input; a conv's kernel
    positions per output channel of its group, averaged over positions (a stride s reaches 1/s^2 of them)."""
    if f.conv is None:
        return int(round(np.count_nonzero(f.weight) / f.weight.shape[1]))
    k = f.conv.weight.shape
    out_per_group = k[0] // f.conv.groups
    return int(round(out_per_group * k[2] * k[3] / (f.conv.stride[0] * f.conv.stride[1])))
