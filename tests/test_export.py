"""NIR export and the NIR -> Lava converter, against PyTorch and nirtorch's interpreter."""

import nir
import numpy as np
import pytest
import torch
from conftest import run_cli

from spikediff.export.deployment import compile_graph
from spikediff.export.nir_graph import to_nir
from spikediff.export.nir_torch import to_torch
from spikediff.export.plan import NirGraphError, plan
from spikediff.models import DenoiserConfig, SpikingDenoiser
from spikediff.runtime.build import build as lava_build


def build(graph, num_steps, fixed_point=False, **kw):
    """The Lava network of a NIR graph, compiled as every command compiles it."""
    return lava_build(compile_graph(graph, num_steps=num_steps, fixed_point=fixed_point), **kw)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return SpikingDenoiser(DenoiserConfig(image_size=8, channels=4, hidden=16))


def _inputs(model, n=3):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 1, 8, 8, generator=g)
    t = torch.tensor([999, 500, 20][:n])
    return x, t


def test_nir_file_reads_back_and_runs_like_the_model(tiny, tmp_path):
    path = tmp_path / "tiny.nir"
    nir.write(path, to_nir(tiny))
    graph = nir.read(path)  # type checking on
    assert graph.metadata["snn_steps"] == 4 and list(graph.metadata["readout_shape"]) == [16, 2, 2]
    executor = to_torch(graph)
    x, t = _inputs(tiny)
    inp = tiny.make_input(x, t)
    state, outs = None, []
    with torch.no_grad():
        for _ in range(tiny.config.num_steps):
            out, state = executor(inp, state)
            outs.append(out)
        expected = tiny.readout_current(x, t)
    assert expected.abs().max() > 0.01  # not a vacuous comparison
    torch.testing.assert_close(torch.stack(outs).mean(0), expected, rtol=0, atol=1e-6)


def test_lava_float_run_equals_pytorch_spike_for_spike(tiny):
    """Three denoiser calls in one Lava run on Loihi2SimCfg: resets separate them, delays align the skips."""
    from spikediff.runtime.run import run_windows

    net = build(to_nir(tiny), tiny.config.num_steps)
    assert net.latency["readout"] == 6 and net.window == 10
    x, t = _inputs(tiny)
    inputs = tiny.make_input(x, t).numpy()
    result = run_windows(net, inputs, record_spikes=True)
    stats_per_call = []
    for i in range(len(x)):
        stats = {}
        with torch.no_grad():
            expected = tiny.readout_current(x[i:i + 1], t[i:i + 1], stats=stats)[0].numpy()
        stats_per_call.append(stats)
        got = result["readout"][i].mean(0).reshape(-1)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    for name in tiny.spiking_layers:
        lava_counts = result["spikes"][name].sum(1)
        torch_counts = [s[name] for s in stats_per_call]
        assert sum(torch_counts) > 0, name
        np.testing.assert_array_equal(lava_counts, torch_counts, err_msg=name)


def _chain(*nodes, edges=None):
    names = [f"n{i}" for i in range(len(nodes))]
    return nir.NIRGraph(nodes=dict(zip(names, nodes)),
                        edges=edges or list(zip(names[:-1], names[1:])), type_check=False)


def _lif(n):
    return nir.LIF(tau=np.full(n, 4e-4), r=np.full(n, 4.0), v_leak=np.zeros(n), v_threshold=np.ones(n),
                   v_reset=np.zeros(n))


def _li(n):
    return nir.LI(tau=np.full(n, 2e-4), r=np.full(n, 2.0), v_leak=np.zeros(n))


def _inp(n):
    return nir.Input(input_type={"input": np.array([n])})


def _out(n):
    return nir.Output(output_type={"output": np.array([n])})


def test_unsupported_node_is_named():
    g = _chain(_inp(4), nir.Linear(weight=np.eye(4)), nir.Threshold(threshold=np.ones(4)), _lif(4),
               nir.Linear(weight=np.eye(4)), _li(4), _out(4))
    with pytest.raises(NirGraphError, match=r"'n2': Threshold is not supported"):
        plan(g)


def test_two_weight_layers_in_a_row_compose_into_one_synapse():
    a, b = np.arange(16.0).reshape(4, 4), np.eye(4)[::-1] * 2
    g = _chain(_inp(4), nir.Linear(weight=a), nir.Linear(weight=b), _li(4), _out(4))
    (syn,) = plan(g).synapses
    assert syn.name == "n1+n2" and syn.src == "n0" and syn.dst == "n3"
    np.testing.assert_allclose(syn.op.weight, b @ a)


def test_long_cycle_is_refused_with_the_node():
    nodes = {"in": _inp(4), "w0": nir.Linear(weight=np.eye(4)), "a": _lif(4), "wab": nir.Linear(weight=np.eye(4)),
             "b": _lif(4), "wba": nir.Linear(weight=np.eye(4)), "wo": nir.Linear(weight=np.eye(4)), "ro": _li(4),
             "out": _out(4)}
    edges = [("in", "w0"), ("w0", "a"), ("a", "wab"), ("wab", "b"), ("b", "wba"), ("wba", "a"), ("b", "wo"),
             ("wo", "ro"), ("ro", "out")]
    with pytest.raises(NirGraphError, match="cycle longer than one population"):
        plan(nir.NIRGraph(nodes=nodes, edges=edges, type_check=False))


def test_a_spiking_population_may_feed_the_output():
    g = _chain(_inp(4), nir.Linear(weight=np.eye(4)), _lif(4), _out(4))
    p = plan(g)
    assert p.outputs == {"n3": "n2"} and p.populations["n2"].spiking


def test_export_cli_writes_a_readable_nir_file(tmp_path):
    out = tmp_path / "shipped.nir"
    res = run_cli("export", "-o", out)
    assert res.returncode == 0, res.stderr
    graph = nir.read(out)
    assert "readout" in graph.nodes and graph.metadata["producer"] == "spikediff"
    bad = run_cli("export", "-o", tmp_path / "x.h5")
    assert bad.returncode == 2 and "NIR files end in .nir" in bad.stderr


def _nirtorch_run(graph, inputs, steps):
    """Reference: nirtorch's interpreter, each input held for `steps` steps -> (N, steps, *output)."""
    executor = to_torch(graph)
    runs = []
    with torch.no_grad():
        for xi in inputs:
            state, outs = None, []
            for _ in range(steps):
                out, state = executor(torch.from_numpy(xi)[None], state)
                outs.append(out[0].numpy())
            runs.append(np.stack(outs))
    return np.stack(runs)


def _hand_built_graph():
    """A graph we did not train: fan-out, fan-in with paths of different depth, a recurrent population,
    a current-based neuron."""
    rng = np.random.default_rng(3)
    w = lambda o, i, s=1.0: (rng.normal(0, s, (o, i))).astype(np.float32)  # noqa: E731
    nodes = {
        "in": _inp(4),
        "w0": nir.Affine(weight=w(6, 4, 1.5), bias=np.full(6, 0.2, dtype=np.float32)),
        "a": _lif(6),
        "rec": nir.Linear(weight=w(6, 6, 0.5)),
        "w1": nir.Linear(weight=w(5, 6, 1.2)),
        # current-based, r = 1 (other frameworks' convention): gains dt/tau_syn and dt/tau_mem
        "b": nir.CubaLIF(tau_syn=np.full(5, 4e-4), tau_mem=np.full(5, 2e-4), r=np.ones(5), v_leak=np.zeros(5),
                         v_threshold=np.full(5, 0.3), v_reset=np.zeros(5), w_in=np.ones(5)),
        "w2": nir.Linear(weight=w(3, 6)),
        "w3": nir.Linear(weight=w(3, 5)),
        "ro": _li(3),
        "out": _out(3),
    }
    edges = [("in", "w0"), ("w0", "a"), ("a", "rec"), ("rec", "a"), ("a", "w1"), ("w1", "b"), ("a", "w2"),
             ("w2", "ro"), ("b", "w3"), ("w3", "ro"), ("ro", "out")]
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


def test_hand_built_recurrent_branching_graph_runs_on_lava_like_nirtorch():
    from spikediff.runtime.run import run_windows

    graph = _hand_built_graph()
    steps = 6
    x = np.random.default_rng(4).uniform(0, 1.5, (2, 4)).astype(np.float32)
    expected = _nirtorch_run(graph, x, steps)
    net = build(graph, steps)
    assert net.latency == {"in": 0, "a": 1, "b": 2, "ro": 3} and "w2_delay" in net.processes
    result = run_windows(net, x, record_spikes=True)
    got = result["readout"]
    assert result["spikes"]["a"].sum() > 0 and result["spikes"]["b"].sum() > 0
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def _pooling_graph():
    """Conv -> LIF -> SumPool -> LIF -> AvgPool -> LIF -> Scale (per channel) -> LIF -> Flatten, Linear -> LI."""
    rng = np.random.default_rng(5)

    def lif3(shape, thr=1.0):
        return nir.LIF(tau=np.full(shape, 4e-4), r=np.full(shape, 4.0), v_leak=np.zeros(shape),
                       v_threshold=np.full(shape, thr), v_reset=np.zeros(shape))

    nodes = {
        "in": nir.Input(input_type={"input": np.array([2, 8, 8])}),
        "conv": nir.Conv2d(input_shape=np.array([8, 8]), weight=rng.normal(0, 0.8, (3, 2, 3, 3)).astype(np.float32),
                           stride=np.array([1, 1]), padding=np.array([1, 1]), dilation=np.array([1, 1]), groups=1,
                           bias=np.full(3, 0.1, dtype=np.float32)),
        "a": lif3((3, 8, 8)),
        "sum": nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
        "b": lif3((3, 4, 4), 1.5),
        "avg": nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
        "c": lif3((3, 2, 2), 0.2),
        "scale": nir.Scale(scale=np.array([1.5, 0.5, 2.0])[:, None, None] * np.ones((3, 2, 2))),
        "d": lif3((3, 2, 2), 0.4),
        "flat": nir.Flatten(input_type={"input": np.array([3, 2, 2])}, start_dim=0, end_dim=-1),
        "fc": nir.Linear(weight=rng.normal(0, 1, (4, 12)).astype(np.float32)),
        "ro": _li(4),
        "out": _out(4),
    }
    order = list(nodes)
    graph = nir.NIRGraph(nodes=nodes, edges=list(zip(order[:-1], order[1:])), type_check=False)
    return graph, rng.uniform(0, 1.5, (2, 2, 8, 8)).astype(np.float32)


def test_pooling_and_scale_nodes_run_on_lava_like_nirtorch():
    from spikediff.runtime.run import run_windows

    graph, x = _pooling_graph()
    steps = 5
    expected = _nirtorch_run(graph, x, steps)
    got = run_windows(build(graph, steps), x, record_spikes=True)
    assert np.abs(expected).max() > 0.1 and got["spikes"]["d"].sum() > 0
    np.testing.assert_allclose(got["readout"], expected, rtol=0, atol=1e-5)
