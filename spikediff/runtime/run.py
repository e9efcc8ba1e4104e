"""Running compiled networks on Lava: fixed inputs played through a network (``run_windows``), and a sampler's
whole denoising loop inside one Lava run (``sample_lava``), for every kind of sampler.

Evaluations are pipelined (``runtime.pipeline``): a feedforward network takes a new evaluation every T Lava
steps. The sampler's host side is its kind's ``HostProgram`` inside a ``HostLoop`` process; a final network
(a decoder) then runs once per image with ``run_windows``.
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from .. import SpikediffError


def _as_input_dict(net, inputs) -> dict:
    plan = net.plan
    if not isinstance(inputs, dict):
        inputs = {plan.input: inputs}
    unknown = set(inputs) - set(plan.inputs)
    missing = set(plan.inputs) - set(inputs)
    if unknown or missing:
        raise SpikediffError(f"inputs: the network's inputs are {sorted(plan.inputs)}, got {sorted(inputs)}")
    return {k: np.asarray(v, dtype=np.float64) for k, v in inputs.items()}


def run_windows(net, inputs, record_spikes: bool = False, target: str = "sim", progress: bool = False) -> dict:
    """Run ``N`` network evaluations in one Lava run, inputs known up front (a ring buffer plays them).

    ``inputs``: (N, *input shape) constant over the T steps, or (N, T, *input shape), or {Input: either}.
    Returns ``{"outputs": {population: (N, T, *shape)}}`` (a readout's state in float units, a spiking
    population's spikes), ``"readout"``: the one readout's, if the network has one, and with
    ``record_spikes`` also ``"spikes": {population: (N, T) spike counts}``.
    """
    from .. import lava_compat
    from ..export.deployment import input_series
    from ..export.layout import from_lava_layout, lava_shape, to_lava_layout
    from .session import lava_session, run_config

    lava_compat.import_lava()
    from lava.proc.io.sink import RingBuffer as Sink
    from lava.proc.io.source import RingBuffer as Source

    plan, t, period = net.plan, net.num_steps, net.period
    inputs = _as_input_dict(net, inputs)
    n = len(next(iter(inputs.values())))
    if n < 1 or any(len(v) != n for v in inputs.values()):
        raise SpikediffError(f"inputs: every input needs the same number N >= 1 of evaluations, got "
                             f"{ {k: len(v) for k, v in inputs.items()} }")
    total = (n - 1) * period + net.window + 1  # + 1: a readout's sum arrives one step after it is read
    sources = []
    for name, x in inputs.items():
        shape = plan.inputs[name]
        series = input_series(x, shape, t, name)
        data = np.zeros((*lava_shape(shape), total), dtype=np.float64 if net.fixed_point is None else np.int32)
        for i in range(n):
            for k in range(t):
                data[..., i * period + k] = net.encode_input(to_lava_layout(series[i, k], shape), name)
        source = Source(data=data)
        for port in net.input_ports[name]:
            source.s_out.connect(port)
        sources.append(source)
    from . import lava_processes as lp

    sinks, readers = {}, set()
    for pop, proc in net.outputs.items():
        if pop in net.accumulating:  # an on-chip readout: its running sum read after every step
            reader = lp.SumReader(var=proc.v)
            port = reader.out
            readers.add(pop)
        else:
            port = proc.v_out if not plan.populations[pop].spiking else proc.s_out
        sinks[pop] = Sink(shape=port.shape, buffer=total)
        port.connect(sinks[pop].a_in)
    spike_sinks = {}
    if record_spikes:  # counted per step by the workers: whole trains are slow to read back (StepSpikeCounter)
        for name, (proc, _count) in net.populations.items():
            if name in sinks:
                continue
            spike_sinks[name] = lp.StepSpikeCounter(shape=proc.s_out.shape, steps=total)
            proc.s_out.connect(spike_sinks[name].s_in)
    run_cfg, _where = run_config(target, "floating_pt" if net.fixed_point is None else "fixed_pt")
    with lava_session(sources[0], run_cfg) as run:
        done = 0
        with tqdm(total=total, desc="lava", unit="lava step", disable=not progress) as bar:
            while done < total:
                k = min(max(period * 16, 64), total - done)
                run(k)
                done += k
                bar.update(k)
        data = {pop: s.data.get() for pop, s in sinks.items()}
        spikes = {name: s.counts.get() for name, s in spike_sinks.items()}
    for pop in readers:  # running sums, a step late -> the readout's state per step
        v = np.moveaxis(data[pop], -1, 0)[1:]
        per_step = v.copy()
        lat = net.latency[pop]
        for i in range(n):
            start = i * period + lat
            per_step[start + 1:start + t] = v[start + 1:start + t] - v[start:start + t - 1]
        data[pop] = np.moveaxis(per_step, 0, -1)
    lat = net.latency
    result: dict = {"outputs": {}}
    for pop, v in data.items():
        v = np.moveaxis(v, -1, 0)
        if plan.populations[pop].spiking:
            rows = [v[i * period + lat[pop]: i * period + lat[pop] + t] for i in range(n)]
            result["outputs"][pop] = np.stack([from_lava_layout(r.astype(np.float64), plan.shapes[pop], net.perms[pop])
                                               for r in rows])
            spikes[pop] = None
        else:
            result["outputs"][pop] = np.stack([net.readout_to_nir(v[i * period + lat[pop]: i * period + lat[pop] + t],
                                                                  pop) for i in range(n)])
    readouts = [pop for pop in plan.outputs.values() if not plan.populations[pop].spiking]
    if len(readouts) == 1:
        result["readout"] = result["outputs"][readouts[0]]
    if record_spikes:
        result["spikes"] = {}
        for name, s in spikes.items():
            if s is None:
                counts = result["outputs"][name].reshape(n, t, -1).sum(-1)
            else:
                counts = np.stack([s[i * period + lat[name]: i * period + lat[name] + t] for i in range(n)])
            result["spikes"][name] = counts
    return result


def run_pipelined(net, pipe, host, output, run_cfg, desc: str, progress: bool) -> tuple:
    """Connect a host process (``s_out`` to the network's input, ``a_in`` from its readout) and spike
    counters, run the whole ``Pipeline`` in one Lava run, and read the result back.

    Returns (the value of ``output``, a Var of the host process; {population: {"active": (images, steps)
    spikes, "idle": spikes outside evaluations}})."""
    from . import lava_processes as lp
    from .session import lava_session

    on_chip = type(run_cfg).__name__ == "Loihi2HwCfg"
    source = host.s_out
    if on_chip:  # host -> chip through an embedded_io adapter (runtime.loihi2)
        from .loihi2 import input_adapter

        adapter = input_adapter(host.s_out.shape)
        host.s_out.connect(adapter.inp)
        source = adapter.out
    for port in net.input_ports[net.plan.input]:
        source.connect(port)
    extra = 0
    if net.plan.readout in net.accumulating:  # the readout sums itself; read once per evaluation
        if on_chip:
            from .loihi2 import state_reader

            offset = (net.readout_latency + pipe.num_steps - 1) % pipe.period
            reader = state_reader(net.readout.v, interval=pipe.period, offset=offset)
        else:
            reader = lp.SumReader(var=net.readout.v, pipeline=pipe, latency=net.readout_latency)
        reader.out.connect(host.a_in)
        extra = 1  # the last sum arrives one step after it is read
    else:
        net.readout.v_out.connect(host.a_in)
    counters = {}
    for name, (proc, _count) in ({} if on_chip else net.populations).items():  # a chip: loihi2_profiler instead
        counters[name] = lp.SpikeCounter(shape=proc.s_out.shape, pipeline=pipe, latency=net.latency[name])
        proc.s_out.connect(counters[name].s_in)

    chunk = pipe.cycle * pipe.period  # one step of every image in flight
    total = pipe.lava_steps + extra
    with tqdm(total=total, desc=desc, unit="lava step", disable=not progress) as bar, \
            lava_session(host, run_cfg) as run:
        done = 0
        while done < total:  # chunks only move the bar; the loop itself stays inside Lava
            k = min(chunk, total - done)
            run(k)
            done += k
            bar.update(k)
        result = output.get()
        active = {name: c.active.get() for name, c in counters.items()}
        idle = {name: float(c.idle.get()[0]) for name, c in counters.items()}
    counts = {}
    for name in counters:
        per_image = np.zeros((pipe.images, pipe.steps))
        for slot, count in enumerate(active[name]):
            job = pipe.job(slot)
            if job is not None:
                per_image[job] = count
        counts[name] = {"active": per_image, "idle": idle[name]}
    return result, counts


def sample_lava(sd, n: int, steps: int, seed: int = 0, first: int = 0, target: str = "auto", progress: bool = True,
                profilers=None, **options) -> dict:
    """Sample ``n`` images with a compiled sampler (``export.deployment.SamplerDeployment``) on Lava: the loop
    network and the kind's host program in one pipelined Lava run, then the final network (if any) in a
    second. ``target``: "sim" (Lava's CPU simulator), "loihi2" or "auto" (``session.run_config``); on a chip,
    ``profilers`` (``runtime.loihi2.Profilers``) measure the loop's run.

    Returns ``images`` (n, C, H, W), the program's ``extras`` (e.g. ``tokens``), ``counters`` {population:
    {"active": (n, steps), "idle"}} of the loop network, ``final_counters`` {population: (n,)} of the final
    network, ``pipeline``, ``network`` (the loop network's ``LavaNetwork``), ``final_network``, ``target``."""
    from ..export.pipeline import Pipeline
    from . import lava_processes as lp
    from .build import build
    from .session import run_config

    if int(n) < 1:
        raise SpikediffError(f"number of images must be at least 1, got {n}")
    tag = "fixed_pt" if sd.fixed_point else "floating_pt"
    run_cfg, where = run_config(target, tag, profilers)  # a missing chip is reported before the network is built
    program = sd.program(n, steps, seed=seed, first=first, **options)
    dep = sd.loop
    net = build(dep)
    pipe = Pipeline(images=n, steps=program.steps, num_steps=net.num_steps, period=net.period, window=net.window)
    index = np.arange(n)
    host = lp.HostLoop(program=program, pipeline=pipe, state=program.start(index),
                       input_shape=dep.plan.inputs[dep.plan.input], readout_shape=net.readout_shape,
                       readout_perm=net.readout_perm, readout_latency=net.readout_latency,
                       input_scale=net.input_scale, readout_scale=net.readout_scale,
                       sums=dep.plan.readout in net.accumulating)
    state, counts = run_pipelined(net, pipe, host, host.state, run_cfg,
                                  f"lava {sd.kind.name} ({n} images x {program.steps} steps)", progress)
    state = np.asarray(state, dtype=np.float64).reshape(n, *program.state_shape)
    result = {"counters": counts, "pipeline": pipe, "network": net, "target": where, "final_network": None,
              "final_counters": {}, **program.extras(state)}
    final_readout = None
    if program.final is not None:
        fnet = build(sd.networks[program.final])
        res = run_windows(fnet, program.final_inputs(state, index), record_spikes=True, target=target)
        final_readout = res["readout"]
        result.update(final_network=fnet, final_counters={k: c.sum(1) for k, c in res["spikes"].items()})
    result["images"] = program.images(state, final_readout)
    return result
