"""NIR graph -> Lava process graph, floating or Loihi fixed point, exact up to a time shift.

Reading the graph
    Populations are the neuron nodes (LIF, IF, CubaLIF: spiking; LI, CubaLI, I: the non-spiking readout
    that feeds the Output). Between two populations lies exactly one weight node (Conv2d, Linear,
    Affine, SumPool2d, AvgPool2d, Scale), optionally with Flatten nodes around it; fan-in is a sum,
    fan-out is allowed. Pooling becomes a depthwise Lava Conv with fixed weights; Scale a diagonal
    Dense (flat) or a depthwise 1x1 Conv (per-channel scale on images).

Layouts
    Lava's Conv works on (W, H, C) arrays with (C_out, kW, kH, C_in) kernels that it flips (Lava computes
    a true convolution, PyTorch a correlation); NIR uses (C, H, W) and correlation. Image-shaped
    populations are stored transposed; a flat population that receives flattened conv outputs keeps
    Lava's flatten order, and dense weights into or out of it are permuted to match (``perm``).

Time
    Every Lava synapse adds one step, so population P fires its NIR step t at Lava step t + latency(P),
    where latency is the longest synapse path from the input. A shorter path into P waits in a
    ``SpikeDelay``. An evaluation of the network spans a window of ``latency(readout) + T`` Lava steps:
    the host input is on for its first T, every population is reset (Lava ``LIFReset``) at the step its
    first input arrives, and the readout's state at window steps latency .. latency + T - 1 is the NIR
    output of steps 0 .. T - 1. The network is a pipeline: each population is reset every ``period``
    steps, so a new evaluation may start every period while earlier ones are still on their way
    (``runtime.pipeline``). Feedforward, the period is T. A self-loop (a recurrent synapse) delivers step
    t - 1 at step t, as in NIR, with no alignment; but its population's last spike of one evaluation would
    reach the first step of the next, so such a population is a ``LIFClear`` that is cleared (state zeroed,
    input dropped, no spike) on the step before each evaluation reaches it, and the period is T + 1.
    Longer cycles cannot match NIR's time step and are refused.

Parameters
    ``folded.fold`` turns the graph into discrete populations (``nir_params.discretize``, forward Euler
    with the graph's dt) with the input gain folded into the weights; ``fixed_point.quantize`` turns
    those into Loihi integers, and then sequential chains become lava-dl netx networks (``netx_hdf5``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import SpikediffError
from .nir_params import NONSPIKING, SPIKING

WEIGHTS = ("Conv2d", "Linear", "Affine", "SumPool2d", "AvgPool2d", "Scale")


class NirGraphError(SpikediffError):
    pass


@dataclass
class Synapse:
    src: str  # population (or the Input node)
    dst: str  # population
    name: str  # the weight node
    node: object
    flat_in: bool  # a Flatten between src and the weight node
    flat_out: bool  # a Flatten between the weight node and dst


@dataclass
class ConvSpec:
    """Any image-to-image weight node as a convolution (NIR layout, correlation)."""

    weight: np.ndarray  # (C_out, C_in / groups, kH, kW)
    bias: np.ndarray  # (C_out,)
    stride: tuple
    padding: tuple
    dilation: tuple
    groups: int


def _pair(v) -> tuple:
    return tuple(int(x) for x in np.broadcast_to(np.ravel(v), (2,)))


def conv_spec(s: Synapse, src_shape: tuple) -> ConvSpec:
    kind, node = _type(s.node), s.node
    if len(src_shape) != 3 or s.flat_in:
        raise NirGraphError(f"NIR node {s.name!r}: {kind} needs an image-shaped (C, H, W) input, "
                            f"its input {s.src!r} has shape {src_shape}")
    c = src_shape[0]
    if kind == "Conv2d":
        w = np.asarray(node.weight, dtype=np.float64)
        if w.ndim != 4:
            raise NirGraphError(f"NIR node {s.name!r}: Conv2d weight must be 4-d, got shape {w.shape}")
        bias = np.zeros(w.shape[0]) if node.bias is None else np.broadcast_to(np.asarray(node.bias, np.float64),
                                                                                (w.shape[0],))
        return ConvSpec(w, bias, _pair(node.stride), _pair(node.padding), _pair(node.dilation), int(node.groups))
    if kind in ("SumPool2d", "AvgPool2d"):
        kh, kw = _pair(node.kernel_size)
        value = 1.0 if kind == "SumPool2d" else 1.0 / (kh * kw)
        return ConvSpec(np.full((c, 1, kh, kw), value), np.zeros(c), _pair(node.stride), _pair(node.padding),
                        (1, 1), c)
    if kind == "Scale":
        scale = np.broadcast_to(np.asarray(node.scale, dtype=np.float64), src_shape).reshape(c, -1)
        if np.ptp(scale, axis=1).max() > 0:
            raise NirGraphError(f"NIR node {s.name!r}: Scale varies within a channel of an image; Lava can scale "
                                f"images per channel only (flatten first)")
        return ConvSpec(scale[:, 0].reshape(c, 1, 1, 1), np.zeros(c), (1, 1), (0, 0), (1, 1), c)
    raise NirGraphError(f"NIR node {s.name!r}: {kind} is not an image-to-image layer")


def dense_spec(s: Synapse, n_in: int) -> tuple:
    """(weight (out, in), bias (out,) or None) of a flat weight node."""
    kind, node = _type(s.node), s.node
    if kind == "Scale":
        scale = np.broadcast_to(np.asarray(node.scale, dtype=np.float64).reshape(-1), (n_in,))
        return np.diag(scale), None
    w = np.asarray(node.weight, dtype=np.float64)
    if w.ndim != 2 or w.shape[1] != n_in:
        raise NirGraphError(f"NIR node {s.name!r}: {kind} weight has shape {w.shape}, its input has {n_in} values")
    return w, (np.asarray(node.bias, dtype=np.float64) if kind == "Affine" else None)


@dataclass
class Plan:
    """The graph read into populations and synapses, with shapes and latencies, before any Lava object."""

    populations: dict  # name -> NIR neuron node
    shapes: dict  # name -> NIR shape (no batch axis); includes the input
    synapses: list
    input: str
    readout: str
    latency: dict = field(default_factory=dict)


def _type(node) -> str:
    return type(node).__name__


def _shape(name: str, node) -> tuple:
    for key in ("tau", "tau_mem", "r"):
        if hasattr(node, key):
            return tuple(np.shape(getattr(node, key)))
    raise NirGraphError(f"NIR node {name!r}: cannot tell its shape")


def plan(graph) -> Plan:
    """Read a NIR graph into populations and synapses; errors name the node and the problem."""
    nodes = graph.nodes
    succ: dict = {name: [] for name in nodes}
    for a, b in graph.edges:
        for end in (a, b):
            if end not in nodes:
                raise NirGraphError(f"NIR edge ({a!r}, {b!r}): no node named {end!r}")
        succ[a].append(b)
    inputs = [n for n, node in nodes.items() if _type(node) == "Input"]
    outputs = [n for n, node in nodes.items() if _type(node) == "Output"]
    if len(inputs) != 1 or len(outputs) != 1:
        raise NirGraphError(f"NIR graph: needs exactly one Input and one Output node, has {inputs} and {outputs}")
    for name, node in nodes.items():
        kind = _type(node)
        if kind not in SPIKING + NONSPIKING + WEIGHTS + ("Input", "Output", "Flatten"):
            raise NirGraphError(f"NIR node {name!r}: {kind} is not supported on Lava (supported: "
                                f"{', '.join(SPIKING + NONSPIKING + WEIGHTS + ('Flatten',))})")
    pops = {n: node for n, node in nodes.items() if _type(node) in SPIKING + NONSPIKING}
    readouts = [p for p in pops if outputs[0] in succ[p]]
    if len(readouts) != 1 or _type(pops[readouts[0]]) not in NONSPIKING:
        raise NirGraphError(f"NIR graph: the Output must be fed by one non-spiking neuron node (LI, CubaLI, I), "
                            f"got {readouts}")
    for p, node in pops.items():
        if _type(node) in NONSPIKING and p != readouts[0]:
            raise NirGraphError(f"NIR node {p!r}: a non-spiking {_type(node)} that is not the readout: Lava neurons "
                                f"send spikes, so nothing downstream could read it")

    synapses = []
    for src in [inputs[0], *pops]:
        for nxt in succ[src]:
            if nxt != outputs[0]:
                synapses.extend(_walk(nodes, succ, src, nxt))
    if any(s.dst == src for src in [inputs[0]] for s in synapses):
        raise NirGraphError("NIR graph: an edge leads into the Input node")
    shapes = {inputs[0]: tuple(int(d) for d in np.ravel(nodes[inputs[0]].input_type["input"]))}
    shapes.update({p: _shape(p, node) for p, node in pops.items()})
    result = Plan(pops, shapes, synapses, inputs[0], readouts[0])
    result.latency = _latencies(result)
    return result


def _walk(nodes, succ, src, first) -> list:
    """Follow one edge out of a population through Flatten nodes and one weight node to populations."""
    found = []
    stack = [(first, None, False, False)]
    while stack:
        name, weight, flat_in, flat_out = stack.pop()
        kind = _type(nodes[name])
        if kind in SPIKING + NONSPIKING:
            if weight is None:
                raise NirGraphError(f"NIR edge {src!r} -> {name!r}: two neuron nodes with no weight node between them "
                                    f"(add an identity Linear)")
            found.append(Synapse(src, name, weight, nodes[weight], flat_in, flat_out))
            continue
        if kind == "Output":
            raise NirGraphError(f"NIR node {src!r}: feeds the Output through {name!r}; the Output must be fed "
                                f"directly by the readout neuron")
        if kind == "Input":
            raise NirGraphError(f"NIR node {name!r}: an edge leads into the Input node")
        if kind in WEIGHTS:
            if weight is not None:
                raise NirGraphError(f"NIR nodes {weight!r} -> {name!r}: two weight layers in a row; Lava needs a "
                                    f"neuron between them (or merge them into one)")
            weight = name
        elif kind == "Flatten":
            flat_in, flat_out = (True, flat_out) if weight is None else (flat_in, True)
        for nxt in succ[name]:
            stack.append((nxt, weight, flat_in, flat_out))
    return found


def _latencies(p: Plan) -> dict:
    """Longest synapse path from the input to each population; only self-loops may close a cycle."""
    incoming: dict = {name: [] for name in p.populations}
    for s in p.synapses:
        if s.src == s.dst:
            continue  # a self-loop arrives one step later: exactly the next NIR step, no alignment needed
        incoming[s.dst].append(s)
    latency = {p.input: 0}
    visiting: set = set()

    def visit(name):
        if name in latency:
            return latency[name]
        if name in visiting:
            raise NirGraphError(f"NIR node {name!r}: lies on a cycle longer than one population; Lava adds a step "
                                f"per synapse, so such a loop cannot match the NIR time step (only self-loops can)")
        visiting.add(name)
        if not incoming[name]:
            raise NirGraphError(f"NIR node {name!r}: not reachable from the Input")
        latency[name] = max(visit(s.src) + 1 for s in incoming[name])
        visiting.discard(name)
        return latency[name]

    for name in p.populations:
        visit(name)
    return latency


def chw_to_whc_perm(shape: tuple) -> np.ndarray:
    """perm[i] = NIR flat index of the element at Lava flat index i, for a (C, H, W) array stored as (W, H, C)."""
    c, h, w = shape
    return np.arange(c * h * w).reshape(c, h, w).transpose(2, 1, 0).reshape(-1)


def to_lava_layout(arr, shape: tuple, perm: np.ndarray | None = None) -> np.ndarray:
    """A per-element array in NIR order (broadcast to ``shape``) -> the population's Lava layout."""
    arr = np.broadcast_to(np.asarray(arr, dtype=np.float64), shape)
    if len(shape) == 3:
        return arr.transpose(2, 1, 0).copy()
    return arr[perm].copy() if perm is not None else arr.copy()


def from_lava_layout(v: np.ndarray, shape: tuple, perm: np.ndarray | None = None) -> np.ndarray:
    """The inverse of ``to_lava_layout`` for arrays (..., *Lava shape) -> (..., *shape)."""
    if len(shape) == 3:
        return np.moveaxis(v, (-3, -2, -1), (-1, -2, -3))
    if perm is None:
        return v
    out = np.empty_like(v)
    out[..., perm] = v
    return out


def conv_weight_to_lava(w: np.ndarray) -> np.ndarray:
    """(C_out, C_in, kH, kW) correlation kernel -> Lava's (C_out, kW, kH, C_in) convolution kernel."""
    return np.ascontiguousarray(w.transpose(0, 3, 2, 1)[:, ::-1, ::-1])


def timing(p: Plan, num_steps: int, pipelined: bool = True) -> tuple:
    """(window, period) in Lava steps for the plan (see the module docstring); ``pipelined=False``: one
    evaluation at a time (period = window)."""
    window = p.latency[p.readout] + num_steps
    period = num_steps + (1 if recurrent(p) else 0)
    return window, period if pipelined else window


def recurrent(p: Plan) -> set:
    """Populations with a self-loop."""
    return {s.dst for s in p.synapses if s.src == s.dst}


@dataclass
class LavaNetwork:
    """A built Lava graph: connect a source to ``input_ports``, read ``readout.v_out``."""

    processes: dict
    input_ports: list  # InPorts of the synapses fed by the host, each expecting ``input_shape_lava``
    input_shape_lava: tuple
    readout: object  # lava_processes.Readout
    readout_perm: np.ndarray | None  # Lava flat index -> NIR flat index of the readout (None: identity)
    readout_shape: tuple  # NIR shape of the readout
    window: int  # Lava steps from an evaluation's first input to its last readout step
    period: int  # Lava steps between the starts of two evaluations (T; T + 1 with self-loops; or the window)
    num_steps: int  # T
    latency: dict  # population -> Lava steps from the input
    readout_latency: int
    populations: dict  # name -> (Lava process, number of neurons)
    synapse_fanout: dict  # population -> synaptic fan-out per spike (for counters)
    fixed_point: object = None  # the FixedPoint it was built from (None: floating point)
    netx_chains: list = field(default_factory=list)  # populations built as lava-dl netx networks, per chain

    @property
    def input_scale(self) -> int:
        """Host input is sent as round(x * input_scale) (1 and unrounded in float)."""
        return 1 if self.fixed_point is None else self.fixed_point.input_scale

    @property
    def readout_scale(self) -> int:
        """Readout state units per unit of the float model's output."""
        return 1 if self.fixed_point is None else self.fixed_point.readout_scale(self.readout.name)

    def readout_to_nir(self, v_lava: np.ndarray) -> np.ndarray:
        """Lava readout state(s) (..., *lava shape) -> NIR order (..., *readout_shape), in float units."""
        return from_lava_layout(np.asarray(v_lava) / self.readout_scale, self.readout_shape, self.readout_perm)

    def encode_input(self, x_lava: np.ndarray) -> np.ndarray:
        """Host input (Lava layout) as sent: graded integers in fixed point."""
        from .fixed_point import encode_input

        return x_lava if self.fixed_point is None else encode_input(x_lava, self.input_scale)


def population_perms(folded) -> dict:
    """Lava order of each flat population fed by flattened convs: Lava's flatten order of that conv's output
    (perm[i] = NIR index at Lava index i); None where Lava keeps NIR's order or the shape is an image."""
    p = folded.plan
    perm: dict = {}
    for name in p.populations:
        feeds = {f.syn.name: f for f in folded.incoming(name) if f.syn.flat_out}
        perms = {tuple(chw_to_whc_perm(conv_out_shape(f.conv, p.shapes[f.syn.src]))) for f in feeds.values()}
        if len(perms) > 1:
            raise NirGraphError(f"NIR node {name!r}: flattened conv inputs of different shapes "
                                f"({', '.join(feeds)}); Lava cannot order them consistently")
        perm[name] = np.array(perms.pop()) if perms else None
    return perm


def build(graph, num_steps: int, dt: float | None = None, pipelined: bool = True, fixed_point=None, netx: bool = True,
          netx_dir=None) -> LavaNetwork:
    """Lava processes for ``graph`` (a NIR graph or a ``folded.Folded``; see the module docstring), not yet
    connected to a source. ``dt`` as in ``folded.fold``.

    ``pipelined=False`` resets once per window even for a feedforward graph (one evaluation at a time).
    ``fixed_point``: a ``fixed_point.FixedPoint`` for this graph (integers for Lava's ``fixed_pt`` models);
    None builds the floating-point network. In fixed point, sequential chains of populations become lava-dl
    netx networks (``netx_hdf5``; its blocks exist in fixed point only) unless ``netx=False``; their HDF5
    files are kept in ``netx_dir`` when one is given.
    """
    from ..runtime import lava_processes as lp
    from .folded import fold

    from lava.proc.conv.process import Conv
    from lava.proc.dense.process import Dense
    from lava.proc.lif.process import LIFReset

    folded = graph if hasattr(graph, "synapses") else fold(graph, dt)
    p, fx = folded.plan, fixed_point
    window, period = timing(p, num_steps, pipelined)
    looped = recurrent(p)

    perm = population_perms(folded)

    def lava_shape(name):
        shape = p.shapes[name]
        return tuple(reversed(shape)) if len(shape) == 3 else shape

    def to_lava(name, arr):
        out = to_lava_layout(arr, p.shapes[name], perm[name])
        return out.astype(np.int64) if fx is not None else out

    procs: dict = {}
    synapse_procs = []
    input_ports = []
    fanout: dict = {}
    chains = _netx_chains(folded, fx, lava_shape, period, netx_dir, procs) if fx is not None and netx else []
    in_chain = {f.syn.name for chain in chains for f in chain[0]}
    for f in folded.synapses:
        s = f.syn
        fanout[s.src] = fanout.get(s.src, 0) + _fanout(f)
        if s.name in in_chain:
            continue
        w_nir = fx.weights[s.name] if fx is not None else f.weight
        bits = 24 if s.src == p.input else 0
        if f.conv is not None:
            spec = f.conv
            if fx is None:  # float64 throughout (see lava_processes.Conv64)
                out_shape = tuple(reversed(conv_out_shape(spec, p.shapes[s.src])))
                proc = lp.Conv64(weight=w_nir, input_shape=lava_shape(s.src), output_shape=out_shape,
                                 stride=spec.stride, padding=spec.padding, dilation=spec.dilation, groups=spec.groups,
                                 name=s.name)
            else:
                proc = Conv(weight=conv_weight_to_lava(w_nir), input_shape=lava_shape(s.src),
                            padding=spec.padding[::-1], stride=spec.stride[::-1], dilation=spec.dilation[::-1],
                            groups=spec.groups, num_message_bits=bits, name=s.name)
            target = proc.a_out.flatten() if s.flat_out else proc.a_out
        else:
            cols = chw_to_whc_perm(p.shapes[s.src]) if len(p.shapes[s.src]) == 3 else \
                (perm.get(s.src) if perm.get(s.src) is not None else np.arange(w_nir.shape[1]))
            rows = perm[s.dst] if perm[s.dst] is not None else np.arange(w_nir.shape[0])
            proc = Dense(weights=w_nir[rows][:, cols], num_message_bits=bits, name=s.name)
            target = proc.a_out
        procs[s.name] = proc
        synapse_procs.append((s, proc, target))

    for name, n in folded.neurons.items():
        if name in procs:  # built inside a netx chain
            continue
        offset = (p.latency[name] + 1) % period  # Lava's first step is time_step 1
        shape = lava_shape(name)
        if fx is not None:
            q = fx.populations[name]
            params = dict(du=q.du, dv=q.dv, bias_mant=to_lava(name, q.bias_mant), bias_exp=to_lava(name, q.bias_exp))
            vth = q.vth
        else:
            params = dict(du=float(np.ravel(n.du)[0]), dv=float(np.ravel(n.dv)[0]),
                          bias_mant=to_lava(name, folded.bias[name]), bias_exp=0)
            vth = float(np.ravel(n.v_threshold)[0]) if n.spiking else None
        if name == p.readout:
            proc = lp.Readout(shape=shape, du=params["du"], dv=params["dv"], bias=params["bias_mant"],
                              bias_exp=params["bias_exp"], reset_interval=period, reset_offset=offset, name=name)
        elif name in looped:  # cleared one step before its first input: see the module docstring
            proc = lp.LIFClear(shape=shape, vth=vth, reset_interval=period, reset_offset=(offset - 1) % period,
                               name=name, **params)
        else:
            proc = LIFReset(shape=shape, vth=vth, reset_interval=period, reset_offset=offset, name=name, **params)
        procs[name] = proc

    for s, proc, target in synapse_procs:
        target.connect(procs[s.dst].a_in)
    inputs = [(s, proc.s_in) for s, proc, _target in synapse_procs]
    inputs += [(chain[0].syn, net.inp) for chain, net in chains]
    for s, in_port in inputs:
        if s.src == p.input:
            input_ports.append(in_port)
            continue
        src_port = procs[s.src].s_out
        delay = p.latency[s.dst] - p.latency[s.src] - 1 if s.src != s.dst else 0
        if delay > 0:
            line = lp.SpikeDelay(shape=lava_shape(s.src), delay=delay, name=f"{s.name}_delay")
            procs[line.name] = line
            src_port.connect(line.s_in)
            src_port = line.s_out
        (src_port.flatten() if s.flat_in else src_port).connect(in_port)

    return LavaNetwork(
        processes=procs, input_ports=input_ports, input_shape_lava=lava_shape(p.input), readout=procs[p.readout],
        readout_perm=perm[p.readout], readout_shape=p.shapes[p.readout], window=window, period=period,
        num_steps=num_steps, latency=dict(p.latency), readout_latency=p.latency[p.readout],
        populations={n: (procs[n], int(np.prod(p.shapes[n]))) for n in p.populations if n != p.readout},
        synapse_fanout=fanout, fixed_point=fx, netx_chains=[[f.syn.dst for f in chain] for chain, _net in chains])


def _netx_chains(folded, fx, lava_shape, period: int, netx_dir, procs: dict) -> list:
    """Write and load a netx network per sequential chain; their neuron processes go into ``procs``."""
    import tempfile

    from .. import lava_compat
    from .netx_hdf5 import write_chains

    lava_compat.import_netx()
    from lava.lib.dl.netx import hdf5

    p = folded.plan
    built = []
    with tempfile.TemporaryDirectory() as tmp:
        for chain, path in write_chains(folded, fx, netx_dir or tmp):
            first = chain[0].syn
            net = hdf5.Network(net_config=str(path), input_message_bits=24 if first.src == p.input else 0,
                               input_shape=lava_shape(first.src) if chain[0].conv is not None else None,
                               reset_interval=period, reset_offset=p.latency[first.dst])
            net.net_config.f.close()  # netx has read everything it needs; the file may go
            for f, layer in zip(chain, net.layers):
                procs[f.syn.dst] = layer.neuron
            built.append((chain, net))
    return built


def conv_out_shape(spec: ConvSpec, src_shape: tuple) -> tuple:
    _c, h, w = src_shape
    k = spec.weight.shape
    size = [(n + 2 * spec.padding[i] - spec.dilation[i] * (k[2 + i] - 1) - 1) // spec.stride[i] + 1
            for i, n in enumerate((h, w))]
    return (k[0], int(size[0]), int(size[1]))


def _fanout(f) -> int:
    """Targets per input spike of a folded synapse: a dense one's nonzero weights per input; a conv's kernel
    positions per output channel of its group, averaged over positions (a stride s reaches 1/s^2 of them)."""
    if f.conv is None:
        return int(round(np.count_nonzero(f.weight) / f.weight.shape[1]))
    k = f.conv.weight.shape
    out_per_group = k[0] // f.conv.groups
    return int(round(out_per_group * k[2] * k[3] / (f.conv.stride[0] * f.conv.stride[1])))
