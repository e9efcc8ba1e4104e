"""NIR graphs as other frameworks export them (snnTorch, Sinabs, Norse, Rockpool), run through spikediff.

Each graph is written to a ``.nir`` file and read back with ``read_graph`` first, so the file is what is tested.
For each one:

- float Lava equals ``reference`` below spike for spike (readout states to 1e-5): an independent numpy
  interpreter of the NIR node semantics, written from the NIR spec and not from spikediff's plan/fold code;
- fixed-point Lava equals spikediff's bit-exact simulator bit for bit;
- something spikes, so neither comparison is vacuous.

The reference's semantics (forward Euler with the graph's dt, as snnTorch's, Norse's and Rockpool's discrete
exports mean their files):

- LIF: ``v = (1 - dt/tau) v + (dt/tau) (v_leak + r I)``; spike when ``v > v_threshold``, then ``v = v_reset``;
- CubaLIF: first ``I_syn = (1 - dt/tau_syn) I_syn + (dt/tau_syn) w_in I``, then the LIF update with ``I_syn``;
- IF: ``v = v + r I`` (Sinabs' IAF: r = 1); LI, CubaLI, I: the same without spikes, their output is v;
- Affine ``W x + b``, Linear ``W x``, Conv2d a correlation (as torch's conv2d), Sum/AvgPool2d windows, Scale,
  Flatten in C order, Delay(d) the input of d/dt steps earlier;
- edges deliver within the step in topological order; an edge out of a neuron that leads back to itself (a
  recurrent layer) delivers that neuron's output of the previous step (zero before the first), so a recurrent
  Affine's bias arrives from the first step on, as in snnTorch's RSynaptic.
"""

from __future__ import annotations

import graphlib
import json

import nir
import numpy as np
import pytest
import torch
from conftest import run_cli

from spikediff.export.deployment import compile_graph
from spikediff.export.nir_graph import read_graph
from spikediff.export.plan import NirGraphError
from spikediff.export.simulator import evaluate
from spikediff.runtime.build import build
from spikediff.runtime.run import run_windows

NEURONS = ("LIF", "CubaLIF", "IF", "LI", "CubaLI", "I")
SPIKING = ("LIF", "CubaLIF", "IF")
DEFAULT_DT = 1e-4  # what NIR files without a dt mean (snnTorch's exporter's dt)


# ------------------------------------------------------------------------------------------------------------------
# The independent reference
# ------------------------------------------------------------------------------------------------------------------

def _f64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _pair(v) -> tuple:
    return tuple(int(a) for a in np.broadcast_to(np.ravel(v), (2,)))


def _conv2d(x, w, b, stride, padding, dilation, groups) -> np.ndarray:
    """Correlation of (N, C, H, W) with (C_out, C_in / groups, kH, kW), in numpy."""
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    n, c, h, wd = x.shape
    co, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((n, co, ho, wo))
    og = co // groups
    for g in range(groups):
        xs = xp[:, g * cg:(g + 1) * cg]
        for i in range(kh):
            for j in range(kw):
                patch = xs[:, :, i * dh: i * dh + sh * (ho - 1) + 1: sh, j * dw: j * dw + sw * (wo - 1) + 1: sw]
                out[:, g * og:(g + 1) * og] += np.einsum("nchw,oc->nohw", patch, w[g * og:(g + 1) * og, :, i, j])
    if b is not None:
        out += _f64(b).reshape(1, -1, 1, 1)
    return out


def _pool(x, kernel, stride, padding, average: bool) -> np.ndarray:
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    out = np.zeros((n, c, ho, wo))
    for i in range(kh):
        for j in range(kw):
            out += xp[:, :, i: i + sh * (ho - 1) + 1: sh, j: j + sw * (wo - 1) + 1: sw]
    return out / (kh * kw) if average else out


def _flatten(x, start, end) -> np.ndarray:
    shape = x.shape[1:]
    start, end = start % len(shape), end % len(shape)
    return x.reshape(len(x), *shape[:start], int(np.prod(shape[start:end + 1])), *shape[end + 1:])


def _param_shape(node) -> tuple:
    for key in ("tau", "tau_mem", "r", "v_threshold"):
        value = getattr(node, key, None)
        if value is not None and np.size(value) > 1:
            return np.shape(value)
    return ()


def reference(graph, inputs: dict, num_steps: int, dt: float) -> dict:
    """Step the NIR graph ``num_steps`` times. ``inputs``: {Input: (N, T, *shape)}. Returns {"spikes": {neuron:
    (N, T, *shape)}, "states": {non-spiking neuron: (N, T, *shape)}, "outputs": {Output: (N, T, *shape)}}."""
    nodes = graph.nodes
    kind = {name: type(node).__name__ for name, node in nodes.items()}
    succ = {name: [] for name in nodes}
    for a, b in graph.edges:
        succ[a].append(b)

    def reaches(start, goal) -> bool:
        seen, stack = set(), [start]
        while stack:
            n = stack.pop()
            if n == goal:
                return True
            if n not in seen:
                seen.add(n)
                stack.extend(succ[n])
        return False

    recurrent = {(a, b) for a, b in graph.edges if kind[a] in NEURONS and reaches(b, a)}
    preds = {name: [] for name in nodes}
    sorter = graphlib.TopologicalSorter({name: [] for name in nodes})
    for a, b in graph.edges:
        preds[b].append(a)
        if (a, b) not in recurrent:
            sorter.add(b, a)
    order = list(sorter.static_order())

    n = len(next(iter(inputs.values())))
    state: dict = {}  # neuron -> {"v", "i"}
    prev: dict = {}  # neuron -> output of the previous step
    history: dict = {name: [] for name in nodes if kind[name] == "Delay"}  # Delay -> its inputs so far
    spikes = {name: [] for name in nodes if kind[name] in SPIKING}
    states = {name: [] for name in nodes if kind[name] in NEURONS and kind[name] not in SPIKING}
    outputs = {name: [] for name in nodes if kind[name] == "Output"}
    for t in range(num_steps):
        out: dict = {}
        for name in order:
            node, k = nodes[name], kind[name]
            if k == "Input":
                out[name] = _f64(inputs[name][:, t])
                continue
            xs = []
            for a in preds[name]:
                if (a, name) in recurrent:  # zero before the first step (needs the neuron's shape from its parameters)
                    xs.append(prev[a] if a in prev else np.zeros((n, *_param_shape(nodes[a]))))
                else:
                    xs.append(out[a])
            if k in NEURONS:
                shape = _param_shape(node) or xs[0].shape[1:]
                x = sum(x.reshape(n, *shape) for x in xs) if xs else np.zeros((n, *shape))
            else:
                x = xs[0] if len(xs) == 1 else sum(xs)
            if k == "Output":
                out[name] = x
            elif k in ("Linear", "Affine"):
                y = x.reshape(n, -1) @ _f64(node.weight).T
                out[name] = y + _f64(node.bias).reshape(-1) if k == "Affine" else y
            elif k == "Conv2d":
                out[name] = _conv2d(x, _f64(node.weight), node.bias, _pair(node.stride), _pair(node.padding),
                                    _pair(node.dilation), int(node.groups))
            elif k in ("SumPool2d", "AvgPool2d"):
                out[name] = _pool(x, _pair(node.kernel_size), _pair(node.stride), _pair(node.padding),
                                  k == "AvgPool2d")
            elif k == "Scale":
                out[name] = x * _f64(node.scale)
            elif k == "Flatten":
                out[name] = _flatten(x, int(node.start_dim), int(node.end_dim))
            elif k == "Delay":
                steps = int(round(float(np.ravel(node.delay)[0]) / dt))
                history[name].append(x)
                out[name] = history[name][t - steps] if t >= steps else np.zeros_like(x)
            elif k in NEURONS:
                s = state.setdefault(name, {"v": np.zeros_like(x), "i": np.zeros_like(x)})
                if k in ("CubaLIF", "CubaLI"):
                    a_syn = dt / _f64(node.tau_syn)
                    s["i"] = (1 - a_syn) * s["i"] + a_syn * _f64(node.w_in) * x
                    current, tau = s["i"], node.tau_mem
                else:
                    current, tau = x, getattr(node, "tau", None)
                if k in ("IF", "I"):
                    s["v"] = s["v"] + _f64(node.r) * current
                else:
                    a = dt / _f64(tau)
                    s["v"] = (1 - a) * s["v"] + a * (_f64(node.v_leak) + _f64(node.r) * current)
                if k in SPIKING:
                    z = s["v"] > _f64(node.v_threshold)
                    s["v"] = np.where(z, np.broadcast_to(_f64(node.v_reset), z.shape), s["v"])
                    out[name] = z.astype(np.float64)
                    spikes[name].append(out[name])
                else:
                    out[name] = s["v"].copy()
                    states[name].append(out[name])
            else:
                raise AssertionError(f"the reference has no semantics for {k}")
        prev = {name: out[name] for name in out if kind[name] in NEURONS}
        for name in outputs:
            outputs[name].append(out[name])
    stack = lambda d: {k: np.stack(v, 1) for k, v in d.items()}  # noqa: E731
    return {"spikes": stack(spikes), "states": stack(states), "outputs": stack(outputs)}


def test_the_reference_follows_the_nir_equations_by_hand():
    """A 1-neuron CubaLIF and a recurrent LIF, stepped by hand: the reference is what the tests trust."""
    one = np.ones(1)
    nodes = {"in": nir.Input(input_type={"input": np.array([1])}),
             "w": nir.Affine(weight=np.array([[2.0]]), bias=np.array([0.5])),
             "c": nir.CubaLIF(tau_syn=2 * one, tau_mem=4 * one, r=2 * one, v_leak=0.5 * one, v_threshold=1.2 * one,
                              v_reset=0 * one, w_in=3 * one),
             "rec": nir.Linear(weight=np.array([[-0.5]])),
             "out": nir.Output(output_type={"output": np.array([1])})}
    edges = [("in", "w"), ("w", "c"), ("c", "rec"), ("rec", "c"), ("c", "out")]
    g = nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)
    x = np.array([[[1.0], [0.0], [1.0], [1.0]]])
    got = reference(g, {"in": x}, 4, dt=1.0)
    i = v = 0.0
    z_prev, expected = 0.0, []
    for t in range(4):
        drive = 2.0 * x[0, t, 0] + 0.5 - 0.5 * z_prev
        i = 0.5 * i + 0.5 * 3 * drive
        v = 0.75 * v + 0.25 * (0.5 + 2 * i)
        z_prev = float(v > 1.2)
        v = 0.0 if z_prev else v
        expected.append(z_prev)
    assert sum(expected) >= 1 and 0 in expected  # the hand example is not trivial
    np.testing.assert_array_equal(got["outputs"]["out"][0, :, 0], expected)


# ------------------------------------------------------------------------------------------------------------------
# Graphs in the style of each framework
# ------------------------------------------------------------------------------------------------------------------

def _full(shape, value, dtype=np.float32):
    return np.full(shape, value, dtype=dtype)


def _bernoulli(rng, shape, p) -> np.ndarray:
    return (rng.random(shape) < p).astype(np.float64)


def snntorch_feedforward():
    """nn.Linear -> snn.Leaky -> nn.Linear -> snn.Leaky, exported by snnTorch 1.0's own ``export_to_nir``.

    Two snnTorch 1.0 export problems against nir 1.0.8, worked around here: a scalar ``beta`` or ``threshold``
    becomes a 0-d array that ``nir.LIF`` rejects ("All parameters must have the same shape") or
    ``infer_types`` cannot match, so each Leaky gets per-neuron tensors; and a sample with a batch dimension
    makes ``infer_types`` fail (``input.output: [[1 4]] -> 0.input: [[4]]``), so the sample has none.

    snnTorch's Leaky resets by subtraction, one step late; its exporter writes v_reset = 0 (NIR 1.0 has no
    subtractive reset), so the file means reset to zero and the reference follows the file, not snnTorch."""
    import snntorch as snn
    from snntorch.export_nir import export_to_nir

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(6, 8),
        snn.Leaky(beta=torch.full((8,), 0.75), threshold=torch.ones(8), init_hidden=True),
        torch.nn.Linear(8, 4),
        snn.Leaky(beta=torch.full((4,), 0.875), threshold=torch.full((4,), 0.5), init_hidden=True, output=True))
    with torch.no_grad():
        net[0].weight.mul_(3.0)
        net[2].weight.mul_(2.5)
    graph = export_to_nir(net, torch.zeros(6))
    x = _bernoulli(np.random.default_rng(1), (3, 8, 6), 0.5)
    return graph, {"x": x, "num_steps": 8}


def snntorch_recurrent():
    """nn.Linear -> snn.RSynaptic (all-to-all recurrent nn.Linear with bias) -> nn.Linear -> snn.Leaky, exported
    by ``export_to_nir``: nirtorch flattens RSynaptic's subgraph into a CubaLIF ``rs.lif`` with a self-loop
    through an Affine ``rs.w_rec``; both Affines into the CubaLIF carry a bias. Same workarounds as above
    (per-neuron alpha/beta/threshold, no batch dimension in the sample)."""
    import snntorch as snn
    from snntorch.export_nir import export_to_nir

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(5, 6)
            self.rs = snn.RSynaptic(alpha=torch.full((6,), 0.5), beta=torch.full((6,), 0.75),
                                    threshold=torch.ones(6), linear_features=6, init_hidden=True)
            self.fc2 = torch.nn.Linear(6, 3)
            self.lif = snn.Leaky(beta=torch.full((3,), 0.75), threshold=torch.full((3,), 0.5), init_hidden=True)

        def forward(self, x):
            return self.lif(self.fc2(self.rs(self.fc(x))))

    torch.manual_seed(2)
    net = Net()
    with torch.no_grad():
        net.fc.weight.mul_(2.0)
        net.rs.recurrent.weight.mul_(1.5)
        net.fc2.weight.mul_(3.0)
        net.fc2.bias.fill_(0.1)
    graph = export_to_nir(net, torch.zeros(5))
    kinds = {type(n).__name__ for n in graph.nodes.values()}
    assert "NIRGraph" not in kinds and "CubaLIF" in kinds  # the recurrent layer arrived flattened
    x = _bernoulli(np.random.default_rng(3), (3, 8, 5), 0.4)
    return graph, {"x": x, "num_steps": 8}


def sinabs_cnn():
    """Input (2, 8, 8) -> Conv2d -> IF -> SumPool2d -> Conv2d -> IF -> SumPool2d -> Flatten -> Affine -> IF: how
    Sinabs exports an IAF CNN (``nir.IF`` with r = 1, pooling after each spiking layer, before the next weight
    layer). spikediff composes each pooling into the weight layer after it."""
    rng = np.random.default_rng(5)

    def conv(cin, cout, hw):
        return nir.Conv2d(input_shape=np.array(hw), weight=rng.normal(0.15, 0.5, (cout, cin, 3, 3)).astype(np.float32),
                          stride=np.array([1, 1]), padding=np.array([1, 1]), dilation=np.array([1, 1]), groups=1,
                          bias=rng.normal(0.05, 0.1, cout).astype(np.float32))

    def iaf(shape, thr):
        return nir.IF(r=_full(shape, 1.0), v_threshold=_full(shape, thr), v_reset=_full(shape, 0.0))

    def pool():
        return nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0]))

    nodes = {
        "input": nir.Input(input_type={"input": np.array([2, 8, 8])}),
        "0": conv(2, 4, [8, 8]), "1": iaf((4, 8, 8), 1.0), "2": pool(),
        "3": conv(4, 4, [4, 4]), "4": iaf((4, 4, 4), 1.0), "5": pool(),
        "6": nir.Flatten(input_type={"input": np.array([4, 2, 2])}, start_dim=0, end_dim=-1),
        "7": nir.Affine(weight=rng.normal(0.1, 0.6, (3, 16)).astype(np.float32),
                        bias=np.array([0.2, -0.1, 0.3], np.float32)),
        "8": iaf((3,), 1.0),
        "output": nir.Output(output_type={"output": np.array([3])}),
    }
    order = list(nodes)
    graph = nir.NIRGraph(nodes=nodes, edges=list(zip(order[:-1], order[1:])), type_check=False)
    x = _bernoulli(rng, (2, 6, 2, 8, 8), 0.4)
    return graph, {"x": x, "num_steps": 6}


def norse_lif(dt=1e-3):
    """Norse's ``LIFBoxCell`` exports as ``nir.LIF`` with its own tau (1/tau_mem_inv = 10 ms), r = 1, v_leak 0,
    v_th; ``LIFCell`` (with synaptic current) as ``nir.CubaLIF`` (tau_syn 5 ms), r = 1, w_in = 1. dt = 1 ms in the
    metadata: decays dt/tau = 0.1 and 0.2, not multiples of 1/4096 (fixed point rounds them)."""
    rng = np.random.default_rng(7)
    nodes = {
        "input": nir.Input(input_type={"input": np.array([4])}),
        "linear": nir.Affine(weight=rng.normal(3.0, 3.0, (6, 4)).astype(np.float32), bias=np.zeros(6, np.float32)),
        "lif": nir.LIF(tau=_full(6, 1e-2), r=_full(6, 1.0), v_leak=_full(6, 0.0), v_threshold=_full(6, 1.0),
                       v_reset=_full(6, 0.0)),
        "linear2": nir.Affine(weight=rng.normal(8.0, 6.0, (3, 6)).astype(np.float32), bias=np.zeros(3, np.float32)),
        "cuba": nir.CubaLIF(tau_syn=_full(3, 5e-3), tau_mem=_full(3, 1e-2), r=_full(3, 1.0), v_leak=_full(3, 0.0),
                            v_threshold=_full(3, 1.0), v_reset=_full(3, 0.0), w_in=_full(3, 1.0)),
        "output": nir.Output(output_type={"output": np.array([3])}),
    }
    order = list(nodes)
    graph = nir.NIRGraph(nodes=nodes, edges=list(zip(order[:-1], order[1:])), metadata={"dt": dt}, type_check=False)
    x = _bernoulli(rng, (2, 12, 4), 0.6)
    return graph, {"x": x, "num_steps": 12}


def rockpool_cubalif():
    """Rockpool's ``LIFTorch`` exports as ``nir.CubaLIF`` (tau_syn, tau_mem, r = tau_mem exp(-dt/tau_mem) / dt,
    v_leak 0, v_threshold, w_in 1) and ``LinearTorch`` as ``nir.Linear`` (its weight transposed). The Output of a
    1-neuron layer declares shape [1, 1, 1]: ``nir.read`` refuses that file with its type check, spikediff's
    ``read_graph`` reads it without. Rockpool writes no dt: it is passed (dt = 1 ms) to compile_graph."""
    dt = 1e-3
    rng = np.random.default_rng(9)
    tau_mem, tau_syn = 16e-3, 8e-3

    def lif(n):
        return nir.CubaLIF(tau_syn=_full(n, tau_syn), tau_mem=_full(n, tau_mem),
                           r=_full(n, tau_mem * np.exp(-dt / tau_mem) / dt), v_leak=_full(n, 0.0),
                           v_threshold=_full(n, 1.0), v_reset=_full(n, 0.0), w_in=_full(n, 1.0))

    nodes = {
        "input": nir.Input(input_type={"input": np.array([3])}),
        "0_LinearTorch": nir.Linear(weight=rng.normal(0.8, 0.6, (4, 3)).astype(np.float32)),
        "1_LIFTorch": lif(4),
        "2_LinearTorch": nir.Linear(weight=rng.normal(1.5, 0.5, (1, 4)).astype(np.float32)),
        "3_LIFTorch": lif(1),
        "output": nir.Output(output_type={"output": np.array([1, 1, 1])}),
    }
    order = list(nodes)
    graph = nir.NIRGraph(nodes=nodes, edges=list(zip(order[:-1], order[1:])), type_check=False)
    x = _bernoulli(rng, (2, 16, 3), 0.7)
    return graph, {"x": x, "num_steps": 16, "dt": dt}


def bias_into_cubalif():
    """Affine with a bias -> CubaLIF -> Linear -> LI readout: the constant current must pass through the
    synaptic decay (spikediff: a constant-source population). Its input is graded and constant in time."""
    rng = np.random.default_rng(11)
    nodes = {
        "input": nir.Input(input_type={"input": np.array([4])}),
        "fc": nir.Affine(weight=rng.normal(0.0, 0.8, (5, 4)).astype(np.float32),
                         bias=np.array([0.6, -0.2, 0.3, 0.9, 0.0], np.float32)),
        "cuba": nir.CubaLIF(tau_syn=_full(5, 2e-4), tau_mem=_full(5, 4e-4), r=_full(5, 4.0), v_leak=_full(5, 0.0),
                            v_threshold=_full(5, 1.0), v_reset=_full(5, 0.0), w_in=_full(5, 2.0)),
        "ro_w": nir.Linear(weight=rng.normal(0.0, 1.0, (2, 5)).astype(np.float32)),
        "ro": nir.LI(tau=_full(2, 2e-4), r=_full(2, 2.0), v_leak=_full(2, 0.0)),
        "output": nir.Output(output_type={"output": np.array([2])}),
    }
    order = list(nodes)
    graph = nir.NIRGraph(nodes=nodes, edges=list(zip(order[:-1], order[1:])), type_check=False)
    x = rng.uniform(-0.5, 1.0, (3, 4))  # graded currents, constant over the steps: (N, *input shape)
    return graph, {"x": x, "num_steps": 8}


def delay_path():
    """Input -> Affine -> LIF ``a``, then two paths into ``b``: a direct Linear and Linear -> Delay(3 dt)."""
    rng = np.random.default_rng(13)

    def lif(n, thr=1.0):
        return nir.LIF(tau=_full(n, 2e-4), r=_full(n, 2.0), v_leak=_full(n, 0.0), v_threshold=_full(n, thr),
                       v_reset=_full(n, 0.0))

    nodes = {
        "input": nir.Input(input_type={"input": np.array([4])}),
        "w0": nir.Affine(weight=rng.normal(0.8, 0.6, (5, 4)).astype(np.float32), bias=_full(5, 0.1)),
        "a": lif(5),
        "direct": nir.Linear(weight=rng.normal(0.1, 0.3, (3, 5)).astype(np.float32)),
        "late": nir.Linear(weight=rng.normal(0.3, 0.3, (3, 5)).astype(np.float32)),
        "delay": nir.Delay(delay=_full(3, 3e-4)),
        "b": lif(3, 1.0),
        "output": nir.Output(output_type={"output": np.array([3])}),
    }
    edges = [("input", "w0"), ("w0", "a"), ("a", "direct"), ("direct", "b"), ("a", "late"), ("late", "delay"),
             ("delay", "b"), ("b", "output")]
    graph = nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)
    x = _bernoulli(rng, (2, 10, 4), 0.5)
    return graph, {"x": x, "num_steps": 10}


def two_in_two_out():
    """Two Inputs (4 and 3 wide) into a shared LIF and a second LIF; two Outputs: spikes of ``h`` and an LI
    readout of ``k`` (fed by ``h`` and directly by the second Input)."""
    rng = np.random.default_rng(17)
    lif = lambda n, thr: nir.LIF(tau=_full(n, 4e-4), r=_full(n, 4.0), v_leak=_full(n, 0.0),  # noqa: E731
                                 v_threshold=_full(n, thr), v_reset=_full(n, 0.0))
    nodes = {
        "a": nir.Input(input_type={"input": np.array([4])}),
        "b": nir.Input(input_type={"input": np.array([3])}),
        "wa": nir.Linear(weight=rng.normal(0.6, 0.5, (5, 4)).astype(np.float32)),
        "wb": nir.Linear(weight=rng.normal(0.4, 0.5, (5, 3)).astype(np.float32)),
        "h": lif(5, 1.0),
        "wh": nir.Linear(weight=rng.normal(0.5, 0.5, (2, 5)).astype(np.float32)),
        "wbk": nir.Linear(weight=rng.normal(0.2, 0.3, (2, 3)).astype(np.float32)),
        "k": nir.LI(tau=_full(2, 2e-4), r=_full(2, 2.0), v_leak=_full(2, 0.0)),
        "spikes": nir.Output(output_type={"output": np.array([5])}),
        "state": nir.Output(output_type={"output": np.array([2])}),
    }
    edges = [("a", "wa"), ("b", "wb"), ("wa", "h"), ("wb", "h"), ("h", "wh"), ("wh", "k"), ("b", "wbk"),
             ("wbk", "k"), ("h", "spikes"), ("k", "state")]
    graph = nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)
    x = {"a": _bernoulli(rng, (2, 6, 4), 0.5), "b": _bernoulli(rng, (2, 6, 3), 0.5)}
    return graph, {"x": x, "num_steps": 6}


CASES = {
    "snntorch-feedforward": snntorch_feedforward,
    "snntorch-rsynaptic": snntorch_recurrent,
    "sinabs-cnn": sinabs_cnn,
    "norse-lif": norse_lif,
    "rockpool-cubalif": rockpool_cubalif,
    "bias-into-cubalif": bias_into_cubalif,
    "delay": delay_path,
    "two-inputs-two-outputs": two_in_two_out,
}


def _from_file(make, tmp_path):
    """The case's graph written with ``nir.write`` and read back with ``read_graph``: (graph, options)."""
    graph, opts = make()
    path = tmp_path / "graph.nir"
    nir.write(path, graph)
    return read_graph(path), opts, path


def _as_dict(graph, x, num_steps: int) -> dict:
    """{Input: (N, T, *shape)}: one array for the graph's one Input, constant inputs (N, *shape) repeated."""
    if not isinstance(x, dict):
        (name,) = [n for n, node in graph.nodes.items() if type(node).__name__ == "Input"]
        x = {name: x}
    series = {}
    for name, v in x.items():
        shape = tuple(int(d) for d in graph.nodes[name].input_type["input"])
        series[name] = np.repeat(v[:, None], num_steps, axis=1) if v.shape[1:] == shape else v
    return series


def _dt(graph, opts) -> float:
    return opts.get("dt") or float((graph.metadata or {}).get("dt", DEFAULT_DT))


# ------------------------------------------------------------------------------------------------------------------
# The tests
# ------------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", list(CASES))
def test_float_lava_equals_the_independent_reference(case, tmp_path):
    graph, opts, _path = _from_file(CASES[case], tmp_path)
    x, t = opts["x"], opts["num_steps"]
    ref = reference(graph, _as_dict(graph, x, t), t, _dt(graph, opts))
    dep = compile_graph(graph, num_steps=t, dt=opts.get("dt"))
    got = run_windows(build(dep), x, record_spikes=True)

    outputs = {out: pop for out, pop in dep.plan.outputs.items()}
    assert set(outputs) == set(ref["outputs"])
    for out, pop in outputs.items():
        expected = ref["outputs"][out].reshape(got["outputs"][pop].shape)
        if pop in ref["spikes"]:
            assert expected.sum() > 0, f"{case}: output {out} never spiked in the reference"
            np.testing.assert_array_equal(got["outputs"][pop], expected, err_msg=f"{case}: output {out}")
        else:
            assert np.abs(expected).max() > 0.05
            np.testing.assert_allclose(got["outputs"][pop], expected, rtol=0, atol=1e-5, err_msg=f"{case}: {out}")
    assert set(got["spikes"]) == set(ref["spikes"])
    for pop, spk in ref["spikes"].items():
        counts = spk.reshape(*spk.shape[:2], -1).sum(-1)
        assert counts.sum() > 0, f"{case}: {pop} never spiked in the reference"
        np.testing.assert_array_equal(got["spikes"][pop], counts, err_msg=f"{case}: spikes of {pop}")


FIXED_CASES = list(CASES)


@pytest.mark.parametrize("case", FIXED_CASES)
def test_fixed_point_lava_equals_the_simulator_bit_for_bit(case, tmp_path):
    graph, opts, _path = _from_file(CASES[case], tmp_path)
    x, t = opts["x"], opts["num_steps"]
    dep = compile_graph(graph, fixed_point=True, num_steps=t, calibration=x, dt=opts.get("dt"))
    sim = evaluate(dep, x)
    _assert_bit_exact(case, dep, sim, run_windows(build(dep), x, record_spikes=True))


def _assert_bit_exact(case, dep, sim, got):
    assert set(got["outputs"]) == set(sim["outputs"]) == set(dep.plan.outputs.values())
    for pop, v in sim["outputs"].items():
        np.testing.assert_array_equal(got["outputs"][pop], v, err_msg=f"{case}: output {pop}")
    assert set(got["spikes"]) == set(sim["spikes"])
    for pop, counts in sim["spikes"].items():
        assert counts.sum() > 0, f"{case}: {pop} never spiked in fixed point"
        np.testing.assert_array_equal(got["spikes"][pop], counts, err_msg=f"{case}: spikes of {pop}")


def test_two_inputs_two_outputs_in_fixed_point_equal_the_simulator_class(tmp_path):
    """The multi-input, multi-output graph in fixed point, through the ``Simulator`` class that ``evaluate``
    wraps, converted to float units per population: one input scale per Input."""
    from spikediff.export.simulator import Simulator

    graph, opts, _path = _from_file(two_in_two_out, tmp_path)
    x, t = opts["x"], opts["num_steps"]
    dep = compile_graph(graph, fixed_point=True, num_steps=t, calibration=x)
    assert set(dep.fixed.input_scales) == {"a", "b"}
    res = Simulator(dep).evaluate(x)
    sim = {"outputs": {k: s.numpy() / dep.readout_scale(k) for k, s in res["states"].items()},
           "spikes": {k: c.numpy() for k, c in res["spikes"].items()}}
    sim["outputs"].update({k: s.numpy().astype(np.float64) for k, s in res["output_spikes"].items()})
    _assert_bit_exact("two-inputs-two-outputs", dep, sim, run_windows(build(dep), x, record_spikes=True))


def test_simulator_evaluates_a_spiking_output_beside_a_readout():
    """Minimal repro: Input -> Linear -> LIF -> Output, and LIF -> Linear -> LI -> a second Output. Lava runs it
    (``run_windows``), the ``Simulator`` class runs it, ``evaluate`` raises "has 2 output populations"."""
    lif = nir.LIF(tau=_full(2, 2e-4), r=_full(2, 2.0), v_leak=_full(2, 0.0), v_threshold=_full(2, 1.0),
                  v_reset=_full(2, 0.0))
    nodes = {"in": nir.Input(input_type={"input": np.array([2])}), "w": nir.Linear(weight=np.eye(2) * 2),
             "h": lif, "w2": nir.Linear(weight=np.eye(2)), "ro": nir.LI(tau=_full(2, 2e-4), r=_full(2, 2.0),
                                                                         v_leak=_full(2, 0.0)),
             "o1": nir.Output(output_type={"output": np.array([2])}),
             "o2": nir.Output(output_type={"output": np.array([2])})}
    edges = [("in", "w"), ("w", "h"), ("h", "o1"), ("h", "w2"), ("w2", "ro"), ("ro", "o2")]
    dep = compile_graph(nir.NIRGraph(nodes=nodes, edges=edges, type_check=False), fixed_point=True, num_steps=3)
    out = evaluate(dep, np.ones((1, 2)))
    assert out["outputs"]["h"].sum() > 0


def test_sinabs_pooling_is_composed_into_the_next_weight_layer(tmp_path):
    """Each SumPool2d after an IF layer becomes part of the following Conv2d / Affine: three synapses, and the
    composed convolution has the pooling's stride."""
    graph, opts, _path = _from_file(sinabs_cnn, tmp_path)
    dep = compile_graph(graph, num_steps=opts["num_steps"])
    names = [f.syn.name for f in dep.folded.synapses]
    assert names == ["0", "2+3", "5+7"]
    conv = dep.folded.synapses[1].conv
    assert conv is not None and conv.stride == (2, 2) and conv.weight.shape == (4, 4, 6, 6)


def test_bias_into_cubalif_goes_through_a_constant_source(tmp_path):
    """The Affine's bias into a CubaLIF is a synapse from spikediff's constant source, in float and fixed point
    (both compared above); without the bias, the spikes differ (so the bias is exercised)."""
    graph, opts, _path = _from_file(bias_into_cubalif, tmp_path)
    dep = compile_graph(graph, num_steps=opts["num_steps"])
    assert dep.folded.has_const
    x, t = opts["x"], opts["num_steps"]
    with_bias = reference(graph, _as_dict(graph, x, t), t, DEFAULT_DT)["spikes"]["cuba"]
    graph.nodes["fc"].bias = np.zeros_like(graph.nodes["fc"].bias)
    without = reference(graph, _as_dict(graph, x, t), t, DEFAULT_DT)["spikes"]["cuba"]
    assert not np.array_equal(with_bias, without)


def test_norse_decays_off_the_4096_grid_are_rounded_and_reported_or_refused_when_strict(tmp_path):
    """dt/tau = 0.1 and 0.2 are not multiples of 1/4096: fixed point rounds them to the nearest 12-bit decay and
    reports the error per layer; ``strict=True`` refuses, naming the node."""
    graph, opts, _path = _from_file(norse_lif, tmp_path)
    assert graph.metadata["dt"] == pytest.approx(1e-3)  # read from the file: dt/tau = 0.1, not 0.01
    x, t = opts["x"], opts["num_steps"]
    dep = compile_graph(graph, fixed_point=True, num_steps=t, calibration=x)
    errors = dep.rounding()
    decay = 1e-3 / float(np.float32(1e-2))  # the file holds float32 taus
    assert errors["lif"]["dv_error"] == pytest.approx(abs(round(decay * 4096) / 4096 - decay), rel=1e-9)
    assert errors["cuba"]["du_error"] > 0 and errors["cuba"]["dv_error"] > 0
    assert any("lif" in note and "rounded" in note for note in dep.notes)
    with pytest.raises(NirGraphError, match=r"'(lif|cuba)'.*not a multiple of 1/4096"):
        compile_graph(graph, fixed_point=True, num_steps=t, calibration=x, strict=True)


def test_rockpool_output_shape_fails_nirs_type_check_but_reads(tmp_path):
    """Rockpool's [1, 1, 1] Output of a 1-neuron layer: ``nir.read`` refuses the file, ``read_graph`` reads it
    and the Output carries that population's spikes."""
    graph, opts, path = _from_file(rockpool_cubalif, tmp_path)
    with pytest.raises(Exception):  # noqa: B017  (nir raises various types for this)
        nir.read(path)
    dep = compile_graph(graph, num_steps=opts["num_steps"], dt=opts["dt"])
    assert dep.plan.outputs == {"output": "3_LIFTorch"} and dep.plan.populations["3_LIFTorch"].spiking


def test_cli_inspect_run_and_report_on_an_snntorch_file(tmp_path):
    """``spikediff inspect``, ``run --fixed-point`` and ``report`` on the snnTorch feedforward file."""
    graph, opts, path = _from_file(snntorch_feedforward, tmp_path)
    x = opts["x"]
    np.save(tmp_path / "x.npy", x)

    res = run_cli("inspect", path, "--snn-steps", opts["num_steps"], timeout=120)
    assert res.returncode == 0, res.stderr
    rows = [line.split() for line in res.stdout.splitlines()]
    for pop in ("1", "3"):  # each snn.Leaky is a population on a LIFReset; "3" feeds the Output
        assert any(r[:2] == [pop, "LIF"] and "LIFReset" in r for r in rows), res.stdout
    assert any(r[:2] == ["3", "LIF"] and r[-1] == "output" for r in rows), res.stdout
    assert "Cores on loihi2:" in res.stdout

    out = tmp_path / "run"
    res = run_cli("run", path, "--input", tmp_path / "x.npy", "--fixed-point", "-o", out, "--quiet", timeout=180)
    assert res.returncode == 0, res.stderr
    counters = json.loads((out / "counters.json").read_text())
    assert counters["bit_exact_vs_simulator"] is True and counters["fixed_point"] is True
    assert counters["inferences"] == len(x) and counters["snn_steps"] == opts["num_steps"]
    assert counters["populations"]["3"]["spikes_per_inference"] > 0
    arrays = np.load(out / "outputs.npz")
    assert arrays["output"].shape == (len(x), opts["num_steps"], 4)
    np.testing.assert_array_equal(arrays["spikes/3"], arrays["output"].sum(-1))

    rep = tmp_path / "report"
    res = run_cli("report", path, "--input", tmp_path / "x.npy", "-o", rep, "--quiet", timeout=180)
    assert res.returncode == 0, res.stderr
    assert (rep / "report.md").stat().st_size > 0
    report = json.loads((rep / "report.json").read_text())
    assert report["per"] == "inference" and report["images"] == len(x)
    assert {"loihi1", "loihi2"} <= {c["profile"] for c in report["cost"]}
    assert all(c["energy_per_image_J"] > 0 for c in report["cost"])


# ------------------------------------------------------------------------------------------------------------------
# Corner cases these graphs found (each was a compiler bug once): minimal graphs
# ------------------------------------------------------------------------------------------------------------------

def _one(value, n=1):
    return _full(n, value)


def _if(n=1, thr=0.5):
    return nir.IF(r=_one(1.0, n), v_threshold=_one(thr, n), v_reset=_one(0.0, n))


def _line(*nodes_):
    nodes = {f"n{i}": node for i, node in enumerate(nodes_)}
    names = list(nodes)
    return nir.NIRGraph(nodes=nodes, edges=list(zip(names[:-1], names[1:])), type_check=False)


def _io(n=1):
    return nir.Input(input_type={"input": np.array([n])}), nir.Output(output_type={"output": np.array([n])})


def test_a_delay_right_after_an_input_is_honoured_by_lava_and_the_simulator():
    """Input -> Delay(2 dt) -> Linear -> IF: one input spike at step 0 must make the IF fire at step 2."""
    inp, out = _io()
    graph = _line(inp, nir.Delay(delay=_one(2e-4)), nir.Linear(weight=np.eye(1)), _if(), out)
    x = np.zeros((1, 4, 1))
    x[0, 0, 0] = 1.0
    expected = reference(graph, {"n0": x}, 4, DEFAULT_DT)["outputs"]["n4"]
    assert expected[0, :, 0].tolist() == [0, 0, 1, 0]
    dep = compile_graph(graph, num_steps=4)
    np.testing.assert_array_equal(run_windows(build(dep), x, record_spikes=True)["outputs"]["n3"], expected)  # Lava
    np.testing.assert_array_equal(evaluate(dep, x)["outputs"]["n3"], expected)  # the simulator: fires at step 0


def test_an_input_delay_line_carries_nothing_into_the_next_evaluation():
    """Input -> Delay(2 dt) -> Linear -> IF, two evaluations of 3 steps: an input spike at the last step of the
    first evaluation falls outside it; the second evaluation (no input) must stay silent."""
    inp, out = _io()
    graph = _line(inp, nir.Delay(delay=_one(2e-4)), nir.Linear(weight=np.eye(1)), _if(), out)
    x = np.zeros((2, 3, 1))
    x[0, 2, 0] = 1.0
    assert reference(graph, {"n0": x}, 3, DEFAULT_DT)["outputs"]["n4"].sum() == 0
    got = run_windows(build(compile_graph(graph, num_steps=3)), x, record_spikes=True)
    np.testing.assert_array_equal(got["spikes"]["n3"], np.zeros((2, 3)))


def test_a_recurrent_delay_line_leaks_nothing_into_the_next_evaluation():
    """Input -> Linear -> IF with a self-loop Linear -> Delay(dt): a spike at the last step of the first evaluation
    would come back two steps later, outside it; the second evaluation (no input) must stay silent."""
    inp, out = _io()
    nodes = {"in": inp, "w": nir.Linear(weight=np.eye(1)), "a": _if(), "rec": nir.Linear(weight=np.eye(1)),
             "d": nir.Delay(delay=_one(1e-4)), "out": out}
    edges = [("in", "w"), ("w", "a"), ("a", "rec"), ("rec", "d"), ("d", "a"), ("a", "out")]
    graph = nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)
    x = np.zeros((2, 3, 1))
    x[0, 2, 0] = 1.0
    expected = reference(graph, {"in": x}, 3, DEFAULT_DT)["outputs"]["out"]
    assert expected[:, :, 0].tolist() == [[0, 0, 1], [0, 0, 0]]
    dep = compile_graph(graph, num_steps=3)
    np.testing.assert_array_equal(evaluate(dep, x)["outputs"]["a"], expected)  # the simulator agrees
    np.testing.assert_array_equal(run_windows(build(dep), x, record_spikes=True)["outputs"]["a"], expected)


def test_a_bias_before_a_delay_is_refused_with_the_node_named():
    """Input -> Affine(W = 0, b = 0.6) -> Delay(2 dt) -> IF: NIR delays the Affine's whole output, so the bias
    reaches the IF only from step 2 (the reference fires at step 3); a delayed constant current has no exact
    synapse form, so the compiler refuses it, naming the Affine."""
    inp, out = _io()
    graph = _line(inp, nir.Affine(weight=np.zeros((1, 1)), bias=_one(0.6)), nir.Delay(delay=_one(2e-4)),
                  _if(thr=1.0), out)
    x = np.zeros((1, 5, 1))
    assert reference(graph, {"n0": x}, 5, DEFAULT_DT)["outputs"]["n4"][0, :, 0].tolist() == [0, 0, 0, 1, 0]
    with pytest.raises(NirGraphError, match="'n1': its bias passes through the Delay 'n2'"):
        compile_graph(graph, num_steps=5)


def test_scale_on_a_flat_input_is_a_diagonal_dense_layer():
    """Input(3) -> Scale -> Linear -> LIF: a per-element gain before a dense layer."""
    inp, out = _io(3)
    graph = _line(inp, nir.Scale(scale=np.array([1.0, 2.0, 3.0], np.float32)), nir.Linear(weight=np.eye(3) * 0.4),
                  _if(3), out)
    x = _bernoulli(np.random.default_rng(0), (1, 4, 3), 0.7)
    expected = reference(graph, {"n0": x}, 4, DEFAULT_DT)["outputs"]["n4"]
    got = run_windows(build(compile_graph(graph, num_steps=4)), x, record_spikes=True)
    np.testing.assert_array_equal(got["outputs"]["n3"], expected)


def test_a_non_spiking_self_loop_is_refused_with_the_node_named():
    """Input -> Linear -> LI with a self-loop Linear -> Output: an LI sends no spikes on Lava, so its loop cannot
    be mapped; compiling or building must say so, naming 'ro'."""
    inp, out = _io(2)
    nodes = {"in": inp, "w": nir.Linear(weight=np.eye(2)), "ro": nir.LI(tau=_one(2e-4, 2), r=_one(2.0, 2),
                                                                          v_leak=_one(0.0, 2)),
             "rec": nir.Linear(weight=np.full((2, 2), 0.3)), "out": out}
    edges = [("in", "w"), ("w", "ro"), ("ro", "rec"), ("rec", "ro"), ("ro", "out")]
    with pytest.raises(NirGraphError, match="'ro'"):
        build(compile_graph(nir.NIRGraph(nodes=nodes, edges=edges, type_check=False), num_steps=3))
