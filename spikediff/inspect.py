"""``spikediff inspect``: what a NIR graph (or a checkpoint's networks) compiles to, without running anything.

For each network: the NIR nodes and their shapes; each population and synapse with the Lava process it
becomes, its latency and delay line; the timing of an evaluation; the cores it needs on Loihi 2 (the chip
profile's mapper); with ``--fixed-point`` the scales and rounding errors per layer; with ``--target loihi2``
where each Lava process would run on a chip and why. A graph that cannot be mapped gets the nodes read so far
and the reason, as a one-line error.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import SpikediffError
from .export.plan import CONST, NirGraphError, kind_of

# Lava processes by where they can run on a Loihi 2 system, with the public evidence (Lava 0.10 / lava-dl 0.6
# sources and tutorials: a process runs on a neurocore only if Lava ships a Loihi 2 (Nc) process model for it).
CHIP = {
    "LIF": "neurocore: Lava's LIF has Loihi 2 NcModels (lava-loihi)",
    "LIFReset": "neurocore: Lava's LIFReset has a Loihi 2 NcModel (reset_interval a power of 2)",
    "Dense": "neurocore: Lava's Dense synapses (Loihi 2 NcModel)",
    "DelayDense": "neurocore: Lava's DelayDense, synaptic delays of up to 62 steps (Loihi 2 NcModel)",
    "DelaySparse": "neurocore: Lava's DelaySparse, synaptic delays of up to 62 steps (Loihi 2 NcModel)",
    "Conv": "neurocore: Lava's Conv (Loihi 2 NcModel, shared kernels)",
    "Network": "neurocore: a lava-dl netx network (its blocks have Loihi 2 NcModels, as in lava-dl's PilotNet)",
}
HOST = {
    "Readout": "host CPU: spikediff's non-spiking readout, Python model only (a CubaLI or a biased readout; an LI "
               "readout is an on-chip LIFReset in the hardware form)",
    "LIFClear": "host CPU: spikediff's self-clearing LIF, Python model only (a population with a self-loop; no "
                "chip form yet: LIFReset cannot drop the step's input)",
    "SpikeDelay": "host CPU: spikediff's delay line, Python model only (a NIR Delay, a wait beyond 62 steps, or "
                  "the floating-point path)",
    "Conv64": "host CPU: the float64 convolution of the floating-point path (fixed point uses Lava's Conv)",
}
BY_DESIGN = {
    "HostLoop": "host CPU, by design: the sampler's host program (on a chip behind embedded_io adapters, "
                "PyToNxAdapter / PyToN3ConvAdapter, as lava-dl's PilotNet does)",
    "GradedDelay": "host CPU, by design: the host input staged for a deeper layer (the host's side of the adapter)",
    "SumReader": "host CPU stand-in for embedded_io.state.Read: the readout's sum, read once per evaluation",
    "SpikeCounter": "host CPU, simulator only: spike counters of the CPU path (a chip reports loihi2_profiler "
                    "activity instead)",
}


def _table(rows: list, header: list) -> list:
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    fmt = "  ".join(f"{{:{'<' if i < 2 else '<'}{w}}}" for i, w in enumerate(widths))
    return [fmt.format(*header), fmt.format(*["-" * w for w in widths])] + [fmt.format(*map(str, r)) for r in rows]


def _shape_of(node) -> str:
    for key in ("weight", "tau", "tau_mem", "r", "scale", "kernel_size"):
        value = getattr(node, key, None)
        if value is not None:
            return f"{key} {tuple(np.shape(value))}"
    t = getattr(node, "input_type", None) or {}
    if isinstance(t, dict) and t:
        return "shape " + str(tuple(int(d) for d in np.ravel(next(iter(t.values())))))
    return ""


def describe_nodes(graph) -> list:
    rows = [(name, kind_of(node), _shape_of(node)) for name, node in graph.nodes.items()]
    return _table(rows, ["node", "type", "shape"])


def lava_process(dep, population: str) -> str:
    from .runtime.build import _sums_on_chip

    p = dep.plan
    pop = p.populations[population]
    if not pop.spiking:
        hardware = dep.fixed is not None and _sums_on_chip(dep.folded, dep.fixed, population)
        return "LIFReset (sums its state)" if hardware else "Readout"
    if population in p.recurrent:
        return "LIFClear"
    return "LIFReset"


def describe(dep, title: str, target: str | None = None, profile: str = "loihi2") -> list:
    from .export.netx_hdf5 import find_chains

    p, folded = dep.plan, dep.folded
    lines = [f"== {title}", ""]
    chains = find_chains(folded, dep.fixed) if dep.fixed is not None else []
    in_chain = {f.syn.dst for chain in chains for f in chain}
    rows = []
    for name, pop in p.populations.items():
        n = folded.neurons[name]
        proc = "netx" if name in in_chain else lava_process(dep, name)
        output = [o for o, q in p.outputs.items() if q == name]
        rows.append((name, pop.kind, "x".join(map(str, pop.shape)), pop.size, proc, p.latency[name],
                     f"{folded.scalar(name, 'du'):.4g}", f"{folded.scalar(name, 'dv'):.4g}",
                     f"{folded.scalar(name, 'v_threshold'):.4g}" if n.spiking else "-",
                     ", ".join(output) or ""))
    lines += ["Populations"] + _table(rows, ["population", "NIR type", "shape", "neurons", "Lava process", "latency",
                                             "du", "dv", "threshold", "feeds Output"]) + [""]
    rows = []
    for f in folded.synapses:
        s = f.syn
        if f.conv is not None:
            c = f.conv
            op = f"Conv {c.weight.shape[0]}x{c.weight.shape[1]}x{c.weight.shape[2]}x{c.weight.shape[3]} s{c.stride[0]} " \
                 f"p{c.padding[0]}" + (f" g{c.groups}" if c.groups > 1 else "")
            proc = "Conv" if dep.fixed is not None else "Conv64"
        else:
            op = f"Dense {f.weight.shape[0]}x{f.weight.shape[1]}"
            proc = "Dense"
        if s.dst in in_chain and len(folded.incoming(s.dst)) == 1:
            proc = "netx"
        if s.src in p.inputs:
            delay = p.latency[s.dst] - 1 + s.delay
            line = f"GradedDelay {delay}" if delay > 0 else ""
        elif s.src == CONST:
            line = "(constant source: a LIF that fires every step)"
        else:
            from .runtime.build import MAX_SYNAPTIC_DELAY, _alignment

            delay = _alignment(p, s)
            synaptic = dep.fixed is not None and s.delay == 0 and delay <= MAX_SYNAPTIC_DELAY
            if delay > 0 and synaptic and proc != "netx":
                proc = "DelaySparse" if f.conv is not None else "DelayDense"
                line = f"synaptic delay {delay}"
            else:
                line = f"SpikeDelay {delay}" if delay > 0 else ""
        nodes = "+".join(s.nodes) if "+" in s.name else ""
        rows.append((s.name, f"{s.src} -> {s.dst}", op, proc, line, nodes))
    lines += ["Synapses"] + _table(rows, ["synapse", "from -> to", "weights", "Lava process", "delay line",
                                          "composed from"]) + [""]
    t = dep.timing
    lines += [f"Timing: T = {t.num_steps} steps per evaluation; window {t.window} Lava steps; a new evaluation every "
              f"{t.period} steps ({'pipelined' if t.pipelined else 'one at a time: the graph has NIR Delay nodes'}).", ""]
    lines += _cores(dep, profile)
    if dep.fixed is not None:
        rows = []
        for name, e in dep.fixed.errors.items():
            if "scale" in e:
                rows.append((name, e["scale"], e["vth"] if e["vth"] is not None else "-", f"{e['threshold_error']:.3g}",
                             f"{e['max_bias_error']:.3g}", f"{max(e['du_error'], e['dv_error']):.3g}"))
        lines += ["Fixed point (input sent as round(x * Q): " + ", ".join(f"{k} Q = {v}" for k, v in
                                                                            dep.fixed.input_scales.items()) + ")"]
        lines += _table(rows, ["population", "scale", "threshold int", "threshold error", "max bias error",
                               "decay error"])
        rows = [(name, f"{e['max_abs_error']:.3g}", f"{e['rms_error']:.3g}", e["max_int"])
                for name, e in dep.fixed.errors.items() if "max_abs_error" in e]
        lines += [""] + _table(rows, ["synapse", "max weight error", "rms error", "largest integer"]) + [""]
        lines += [f"note: {n}" for n in dep.notes]
    if target == "loihi2":
        lines += _placement(dep)
    return lines


def _cores(dep, profile_name: str) -> list:
    from .hardware_sim.connectivity import Connectivity
    from .hardware_sim.mapping import map_to_cores
    from .hardware_sim.profiles import load_profile

    prof = load_profile(profile_name)
    try:
        m = map_to_cores(dep.folded, Connectivity(dep.folded, dep.fixed), prof).summary()
    except SpikediffError as exc:
        return [f"Cores on {profile_name}: cannot be mapped ({exc})", ""]
    per = ", ".join(f"{k} {v['cores']}" for k, v in m["populations"].items())
    return [f"Cores on {profile_name}: {m['cores']} ({per}); {m['chips']} chip(s)", ""]


def _placement(dep) -> list:
    """Where each process of the deployed graph would run on a Loihi 2 system, and what stops it: the processes
    are those ``runtime.build`` makes for Lava (the hardware form in fixed point), by their Lava class."""
    from .runtime.build import build

    net = build(dep)
    rows, stops = [], []
    in_netx = {pop for chain in net.netx_chains for pop in chain}
    for name, proc in net.processes.items():
        if name in in_netx:
            continue  # a block of a netx network (its row below)
        kind = type(proc).__name__
        where = CHIP.get(kind) or HOST.get(kind) or BY_DESIGN.get(kind, f"unknown ({kind})")
        if kind == "LIFReset" and dep.timing.period & (dep.timing.period - 1):
            where += f" (here period {dep.timing.period}: not a power of 2)"
            stops.append(f"{name}: reset period {dep.timing.period} is not a power of 2")
        if kind in HOST:
            stops.append(f"{name}: {kind} runs on the host")
        rows.append((name, kind, where))
    for chain in net.netx_chains:
        rows.append(("+".join(chain), "netx Network", CHIP["Network"]))
    for kind in ("HostLoop", "SumReader") if net.accumulating else ("HostLoop",):
        rows.append(("(host)", kind, BY_DESIGN[kind]))
    lines = ["Loihi 2 placement (read from Lava's public sources; not checked on a chip)"]
    lines += _table(rows, ["process", "Lava process", "where it runs"]) + [""]
    if not dep.fixed_point:
        stops.insert(0, "floating point: a chip runs fixed point only (use --fixed-point)")
    lines += ["Neurons or synapses left on the host:"] + [f"  - {s}" for s in stops or ["none"]]
    return lines + [""]


def inspect_path(path, fixed_point: bool = False, strict: bool = False, dt: float | None = None,
                 num_steps: int | None = None, target: str | None = None) -> str:
    from .checkpoint import resolve
    from .export.deployment import compile_graph
    from .export.nir_graph import read_graph

    path = resolve(path)
    if Path(path).suffix == ".nir":
        graph = read_graph(path)
        meta = dict(graph.metadata or {})
        lines = [f"NIR graph {path}" + (f" ({meta.get('producer')}, {meta.get('network')})" if meta.get("producer")
                                         else ""), ""] + describe_nodes(graph) + [""]
        steps = num_steps or meta.get("snn_steps") or 1
        try:
            dep = compile_graph(graph, fixed_point=fixed_point, num_steps=steps, strict=strict, dt=dt)
        except NirGraphError as exc:
            print("\n".join(lines))
            raise NirGraphError(f"{path}: cannot be deployed: {exc}") from None
        title = f"network (T = {steps}{'' if num_steps or meta.get('snn_steps') else ', use --snn-steps'})"
        return "\n".join(lines + describe(dep, title, target))
    from .checkpoint import load_model
    from .diffusion import kinds
    from .export.deployment import compile_sampler
    from .export.nir_graph import sampler_graphs

    model, schedule, _ = load_model(path)
    kind = kinds.of_model(model)
    sd = compile_sampler(sampler_graphs(model, schedule), fixed_point=fixed_point, strict=strict)
    lines = [f"checkpoint {path}: a {kind.name} sampler ({kind.description}); networks: {', '.join(sd.networks)}", ""]
    for role, dep in sd.networks.items():
        lines += describe(dep, f"{role} ({dep.metadata.get('network')})", target)
    return "\n".join(lines)
