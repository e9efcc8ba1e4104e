"""The Loihi 2 cost model: each mapping rule on small hand-built graphs whose core counts are worked out by hand,
chip-to-chip pricing, error bars and sensitivity, single-image figures, and lava-dl netx networks read back."""

import os
from pathlib import Path

import nir
import numpy as np
import pytest
from test_export import _chain, _inp, _li, _lif, _out

from spikediff import SpikediffError
from spikediff.export.deployment import compile_graph
from spikediff.export.netx_read import read_netx, to_deployment
from spikediff.export.simulator import EventTally, Simulator
from spikediff.hardware_sim.connectivity import Connectivity
from spikediff.hardware_sim.cost import estimate
from spikediff.hardware_sim.events import Events, count_events
from spikediff.hardware_sim.mapping import Core, Mapping, Route, allocate, balance, map_to_cores
from spikediff.hardware_sim.profiles import UNITS, builtin_names, load_profile

PJ, NS = 1e-12, 1e-9


def _profile(tmp_path, name="hand", bounds=None, **values):
    """A profile file of exact numbers, except ``bounds`` {key: (low, high)}."""
    bounds = bounds or {}
    text = f'name = "{name}"\ntitle = "hand-made"\n'
    for k, v in values.items():
        lo, hi = bounds.get(k, (v, v))
        text += f'[quantity.{k}]\nvalue = {v}\nlow = {lo}\nhigh = {hi}\nunit = "{UNITS[k]}"\nsource = "test"\n'
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return load_profile(str(path))


LOIHI2_LIKE = dict(cores_per_chip=64, max_neurons_per_core=1000, bits_per_weight=8, synapse_row_bits=0,
                   neuron_state_bytes=1, axon_in_bytes=0, axon_out_bytes=0, conv_kernel_shared=1)


def _lif3(shape):
    return nir.LIF(tau=np.full(shape, 4e-4), r=np.full(shape, 4.0), v_leak=np.zeros(shape), v_threshold=np.ones(shape),
                   v_reset=np.zeros(shape))


def _conv(c_out, c_in, k, hw, pad=0):
    return nir.Conv2d(input_shape=np.array(hw), weight=np.full((c_out, c_in, k, k), 0.5), stride=np.array([1, 1]),
                      padding=np.array([pad, pad]), dilation=np.array([1, 1]), groups=1, bias=np.zeros(c_out))


def _conv_graph():
    """Input (2, 8, 8) -> 3x3 conv, padding 1 -> LIF (4, 8, 8) -> 1x1 conv -> LI (1, 8, 8)."""
    nodes = {"in": nir.Input(input_type={"input": np.array([2, 8, 8])}), "c1": _conv(4, 2, 3, [8, 8], 1),
             "a": _lif3((4, 8, 8)), "c2": _conv(1, 4, 1, [8, 8]),
             "r": nir.LI(tau=np.full((1, 8, 8), 2e-4), r=np.full((1, 8, 8), 2.0), v_leak=np.zeros((1, 8, 8))),
             "out": nir.Output(output_type={"output": np.array([1, 8, 8])})}
    edges = [("in", "c1"), ("c1", "a"), ("a", "c2"), ("c2", "r"), ("r", "out")]
    return compile_graph(nir.NIRGraph(nodes=nodes, edges=edges, type_check=False), num_steps=1, fixed_point=True)


def _mapped(dep, prof, policy="fewest", **kw):
    return map_to_cores(dep.folded, Connectivity(dep.folded, dep.fixed), prof, policy, **kw)


def _per_population(m):
    return {name: s["cores"] for name, s in m.summary()["populations"].items()}


def test_a_convolution_is_stored_as_one_shared_kernel_per_core(tmp_path):
    dep = _conv_graph()
    # a core of n neurons of "a" (whole positions, all 4 channels) holds the kernel once: 4 x 2 x 3 x 3 weights of
    # 8 bits = 72 B, wherever its positions are, plus 1 B of state per neuron: 72 + 64 = 136 B fits 64 neurons,
    # so 256 neurons take 4 cores; the readout's kernel is 1 x 4 x 8 bits = 4 B, its 64 neurons one core
    prof = _profile(tmp_path, memory_per_core=136, **LOIHI2_LIKE)
    m = _mapped(dep, prof)
    assert _per_population(m) == {"a": 4, "r": 1}
    assert [(c.neurons, c.synapse_bytes, c.state_bytes, c.memory_bytes) for c in m.cores if c.population == "a"] == \
        [(64, 72, 64, 136)] * 4
    assert m.cores[-1].synapse_bytes == 4 and m.limits["a"] == "core memory"
    # the same chip storing every synapse of the convolution (no shared kernels) needs more cores
    unshared = _mapped(dep, _profile(tmp_path, memory_per_core=136, **{**LOIHI2_LIKE, "conv_kernel_shared": 0}))
    assert _per_population(unshared)["a"] > 4


def test_a_shared_kernel_stores_only_the_rows_it_uses_dense_or_sparse(tmp_path):
    """A kernel derived for space-to-depth layouts (nearest up-sampling by 2, then a 3 x 3 convolution, written
    as one Conv2d onto 4 phases per channel) is mostly structural zeros: a core keeps its nonzero rows only."""
    import torch

    from spikediff.models.s2d import S2DSynapse

    syn = S2DSynapse(2, 2, 3, upsample=2, r_out=2, bias=False)
    with torch.no_grad():
        syn.weight.fill_(0.5)
    w, _, stride, pad, _ = syn.derived()
    w = w.detach()
    assert tuple(w.shape) == (8, 2, 3, 3)  # 2 channels x 4 phases, 2 input channels, 3 x 3 coarse offsets
    conv = nir.Conv2d(input_shape=np.array([4, 4]), weight=w.numpy().astype(np.float64),
                      stride=np.array([stride, stride]), padding=np.array([pad, pad]), dilation=np.array([1, 1]),
                      groups=1, bias=np.zeros(8))
    nodes = {"in": nir.Input(input_type={"input": np.array([2, 4, 4])}), "c1": conv, "a": _lif3((8, 4, 4)),
             "c2": _conv(1, 8, 1, [4, 4]),
             "r": nir.LI(tau=np.full((1, 4, 4), 2e-4), r=np.full((1, 4, 4), 2.0), v_leak=np.zeros((1, 4, 4))),
             "out": nir.Output(output_type={"output": np.array([1, 4, 4])})}
    edges = [("in", "c1"), ("c1", "a"), ("a", "c2"), ("c2", "r"), ("r", "out")]
    dep = compile_graph(nir.NIRGraph(nodes=nodes, edges=edges, type_check=False), num_steps=1, fixed_point=True)
    m = _mapped(dep, _profile(tmp_path, memory_per_core=10000, **LOIHI2_LIKE))
    (core,) = [c for c in m.cores if c.population == "a"]
    # per axis, phase 0 reads coarse offsets -1 and 0, phase 1 offsets 0 and +1: with 2 output channels, a row
    # (input channel, offset) has 2 nonzero weights at a corner offset, 4 at an edge, 8 at the centre, of the 8
    # channels on the core; dense 8 x 8 = 64 bits, sparse count x (8 + 3 index bits): per input channel
    # 4 x 22 + 4 x 44 + 64 = 328 bits, so 656 bits = 82 B (all 144 entries stored densely: 144 B)
    assert core.synapse_bytes == 82
    # a 64-bit header per row: the 18 rows add 144 B
    m = _mapped(dep, _profile(tmp_path, memory_per_core=10000, **{**LOIHI2_LIKE, "synapse_row_bits": 64}))
    assert [c.synapse_bytes for c in m.cores if c.population == "a"] == [82 + 144]
    # rows of zeros are not stored: zero the kernel's right-hand column (6 of the 18 rows)
    w2 = w.numpy().astype(np.float64).copy()
    w2[..., 2] = 0
    nodes["c1"] = nir.Conv2d(input_shape=np.array([4, 4]), weight=w2, stride=np.array([stride, stride]),
                             padding=np.array([pad, pad]), dilation=np.array([1, 1]), groups=1, bias=np.zeros(8))
    dep = compile_graph(nir.NIRGraph(nodes=nodes, edges=edges, type_check=False), num_steps=1, fixed_point=True)
    m = _mapped(dep, _profile(tmp_path, memory_per_core=10000, **{**LOIHI2_LIKE, "synapse_row_bits": 64}))
    # left per input channel: column -1 (offsets y = -1, 0, +1: 22 + 44 + 22 bits) and column 0 (44 + 64 + 44)
    left = 2 * (22 + 44 + 22) + 2 * (44 + 64 + 44)
    assert [c.synapse_bytes for c in m.cores if c.population == "a"] == [(left + 12 * 64) // 8]


def _dense_graph(w):
    """Input (16) -> Linear w (4 x 16) -> LIF (4) -> Linear (1 x 4) -> LI (1)."""
    return compile_graph(_chain(_inp(16), nir.Linear(weight=w), _lif(4), nir.Linear(weight=np.ones((1, 4))), _li(1),
                                _out(1)), num_steps=1, fixed_point=True)


def test_a_dense_synapse_is_stored_dense_or_sparse_whichever_is_smaller(tmp_path):
    prof = _profile(tmp_path, memory_per_core=10000, **LOIHI2_LIKE)
    one_per_row = np.zeros((4, 16))
    one_per_row[np.arange(4), 4 * np.arange(4)] = 1.0
    # 4 input axons, 4 nonzero weights: dense 4 x 4 x 8 bits = 16 B, sparse 4 x (8 + 2 index bits) = 5 B
    m = _mapped(_dense_graph(one_per_row), prof)
    assert [c.synapse_bytes for c in m.cores] == [5, 4]  # the readout: 4 axons x 1 x 8 bits dense (sparse: 4.5 B)
    # every weight nonzero: dense 16 x 4 x 8 bits = 64 B, sparse 64 x 10 bits = 80 B
    m = _mapped(_dense_graph(np.ones((4, 16))), prof)
    assert m.cores[0].synapse_bytes == 64 and m.cores[0].fan_in_axons == 16
    # a 64-bit header per input axon: dense 4 x (64 + 32) = 48 B, sparse 4 x 64 + 40 bits = 37 B
    m = _mapped(_dense_graph(one_per_row), _profile(tmp_path, memory_per_core=10000,
                                                     **{**LOIHI2_LIKE, "synapse_row_bits": 64}))
    assert m.cores[0].synapse_bytes == 37


def test_a_convolution_from_a_1x1_map_is_stored_as_the_matrix_it_is(tmp_path):
    """A dense layer written as a convolution (the SDID's feedback: a 3 x 3 kernel with padding 2 from a 1 x 1 map
    onto a 3 x 3 grid) uses each kernel tap at one position only: a core stores its matrix, as for the same
    layer written as a Linear, not the whole kernel for its channels (36 B each, over this budget)."""
    w = np.random.default_rng(0).uniform(0.5, 1.0, (2, 4, 3, 3))
    conv = nir.Conv2d(input_shape=np.array([1, 1]), weight=w, stride=np.array([1, 1]), padding=np.array([2, 2]),
                      dilation=np.array([1, 1]), groups=1, bias=np.zeros(2))
    readout = nir.LI(tau=np.full((1, 3, 3), 2e-4), r=np.full((1, 3, 3), 2.0), v_leak=np.zeros((1, 3, 3)))
    nodes = {"in": nir.Input(input_type={"input": np.array([4, 1, 1])}), "c1": conv, "a": _lif3((2, 3, 3)),
             "c2": _conv(1, 2, 1, [3, 3]), "r": readout, "out": nir.Output(output_type={"output": np.array([1, 3, 3])})}
    edges = [("in", "c1"), ("c1", "a"), ("a", "c2"), ("c2", "r"), ("r", "out")]
    as_conv = compile_graph(nir.NIRGraph(nodes=nodes, edges=edges, type_check=False), num_steps=1, fixed_point=True)
    # the same layer as a matrix: target (o, i, j) meets input channel c at tap (2 - i, 2 - j)
    matrix = np.flip(w, (2, 3)).transpose(0, 2, 3, 1).reshape(18, 4)
    as_dense = compile_graph(_chain(_inp(4), nir.Linear(weight=matrix), _lif(18),
                                    nir.Linear(weight=np.kron(np.eye(9), np.full((1, 2), 0.5))), _li(9), _out(9)),
                             num_steps=1, fixed_point=True)
    conn = Connectivity(as_conv.folded, as_conv.fixed)
    (c1,) = [f for f in as_conv.folded.synapses if f.syn.dst == "a"]
    (c2,) = [f for f in as_conv.folded.synapses if f.syn.dst == "r"]
    assert not conn.shares_kernel(c1) and conn.shares_kernel(c2)
    np.testing.assert_array_equal(conn.matrix(c1), matrix != 0)
    # 1 B of state and 4 input axons x 8 bits per neuron: 4 neurons a core (20 B), so 18 neurons on 5 cores
    prof = _profile(tmp_path, memory_per_core=20, **LOIHI2_LIKE)
    conv_cores, dense_cores = ([(c.neurons, c.synapse_bytes, c.fan_in_axons) for c in _mapped(dep, prof).cores
                                if c.population in ("a", "n2")] for dep in (as_conv, as_dense))
    assert conv_cores == dense_cores == [(4, 16, 4)] * 4 + [(2, 8, 4)]


def _two_layer_graph():
    """Input (16) -> Linear (all ones) -> LIF (8) -> Linear (all ones) -> LI (1)."""
    return compile_graph(_chain(_inp(16), nir.Linear(weight=np.ones((8, 16))), _lif(8),
                                nir.Linear(weight=np.ones((1, 8))), _li(1), _out(1)), num_steps=1, fixed_point=True)


def test_one_budget_holds_synapses_neuron_state_and_axon_tables(tmp_path):
    dep = _two_layer_graph()
    # a hidden core of n neurons: 16 x n B of dense weights, s x n B of state, 16 input axons x 4 B = 64 B
    base = {**LOIHI2_LIKE, "axon_in_bytes": 4}
    m = _mapped(dep, _profile(tmp_path, memory_per_core=200, **{**base, "neuron_state_bytes": 1}))
    assert _per_population(m) == {"n2": 1, "n4": 1}  # 64 + 8 x 17 = 200 B
    m = _mapped(dep, _profile(tmp_path, memory_per_core=200, **{**base, "neuron_state_bytes": 18}))
    assert _per_population(m) == {"n2": 2, "n4": 1}  # 4 neurons: 64 + 4 x 34 = 200 B
    assert [c.memory_bytes for c in m.cores] == [200, 200, 8 + 18 + 8 * 4]
    # routing entries (one per hidden neuron, to the readout's core) at 4 B: 4 neurons need 216 B, so the
    # hidden layer is re-split into cores of 2 (140 B each)
    m = _mapped(dep, _profile(tmp_path, memory_per_core=200, **{**base, "neuron_state_bytes": 18,
                                                                  "axon_out_bytes": 4}))
    assert _per_population(m)["n2"] == 4 and m.limits["n2"] == "routing tables"
    assert [c.memory_bytes for c in m.cores[:4]] == [32 + 36 + 64 + 8] * 4 and m.cores[0].fan_out_axons == 2


def test_lava_cuts_images_into_power_of_two_column_slices(tmp_path):
    nodes = {"in": nir.Input(input_type={"input": np.array([2, 4, 8])}), "c1": _conv(2, 2, 1, [4, 8]),
             "a": _lif3((2, 4, 8)), "c2": _conv(1, 2, 1, [4, 8]),
             "r": nir.LI(tau=np.full((1, 4, 8), 2e-4), r=np.full((1, 4, 8), 2.0), v_leak=np.zeros((1, 4, 8))),
             "out": nir.Output(output_type={"output": np.array([1, 4, 8])})}
    edges = [("in", "c1"), ("c1", "a"), ("a", "c2"), ("c2", "r"), ("r", "out")]
    dep = compile_graph(nir.NIRGraph(nodes=nodes, edges=edges, type_check=False), num_steps=1, fixed_point=True)
    # "a": a column is 4 rows x 2 channels = 8 neurons, its kernel 2 x 2 x 8 bits = 4 B; 30 B hold 26 neurons
    # (3 columns and a bit), so the fewest cores are 26 + 26 + 12 and Lava's power-of-two slices 2 columns each
    prof = _profile(tmp_path, memory_per_core=30, **LOIHI2_LIKE)
    fewest, lava = _mapped(dep, prof), _mapped(dep, prof, "lava")
    assert [c.neurons for c in fewest.cores if c.population == "a"] == [26, 26, 12]
    assert [c.neurons for c in lava.cores if c.population == "a"] == [16] * 4
    assert lava.limits["a"] == "2-column slices (power of two)"
    # a slice is whole columns: x (the last NIR axis) is what changes between cores
    owner = lava.core_of["a"].reshape(2, 4, 8)
    assert (owner[:, :, 0] == owner[0, 0, 0]).all() and (owner[:, :, 1] == owner[0, 0, 0]).all()
    assert owner[0, 0, 2] == owner[0, 0, 0] + 1


def test_balanced_cores_hold_equal_work_and_cores_go_where_the_work_is(tmp_path):
    dep = _two_layer_graph()
    prof = _profile(tmp_path, memory_per_core=10000, **LOIHI2_LIKE)
    work = {"n2": np.array([1, 1, 1, 1, 1, 1, 1, 9.0]), "n4": np.ones(1)}
    m = _mapped(dep, prof, "balanced", cores={"n2": 2, "n4": 1}, work=work)
    assert [c.neurons for c in m.cores] == [7, 1, 1]  # work 7 and 9: the closest cut to 8 each
    # each next core to the population with the most work per core
    assert allocate({"a": 3.0, "b": 1.0, "c": 0.0}, {"a": 1, "b": 1, "c": 1}, {"a": 8, "b": 8, "c": 1}, 5) == \
        {"a": 3, "b": 1, "c": 1}
    assert allocate({"a": 3.0}, {"a": 1}, {"a": 2}, 10) == {"a": 2}  # never more cores than neurons


def _events_of(dep, n=4, seed=0):
    """Events of ``n`` random inputs through the bit-exact simulator."""
    x = np.random.default_rng(seed).uniform(0, 2, (n, *dep.plan.inputs[dep.plan.input]))
    res = Simulator(dep).evaluate(x)
    tally = EventTally(dep.plan)
    tally.add(res)
    part = {**tally.to_dict(), "deployment": dep, "items": n, "evaluations": 1,
            "counters": {k: {"active": c.numpy()} for k, c in res["spikes"].items()}}
    return count_events(part, Connectivity(dep.folded, dep.fixed))


def test_the_least_energy_mapping_spreads_work_when_static_power_dominates(tmp_path):
    from spikediff.hardware_sim.cost import energy, neuron_work

    dep = _two_layer_graph()
    ev = _events_of(dep)
    assert ev.input_synops["n2"].sum() > 0 and ev.synops["n4"].sum() > 0
    conn = Connectivity(dep.folded, dep.fixed)
    values = dict(synaptic_op_energy=1, neuron_update_energy_active=1, neuron_update_energy_inactive=1,
                  spike_energy_within_tile=1, synaptic_op_time=1, neuron_update_time_active=1,
                  neuron_update_time_inactive=1, barrier_sync_time_one_tile=1, barrier_sync_time_full_chip=1,
                  static_power=10, memory_per_core=10000, **{**LOIHI2_LIKE, "cores_per_chip": 16})
    prof = _profile(tmp_path, **values)
    fewest = map_to_cores(dep.folded, conn, prof)
    best, tried = balance(dep.folded, conn, prof, neuron_work(ev, prof), fewest, lambda m: energy(ev, prof, m))
    # budgets: the fewest cores (2) and a full chip, capped at one neuron per core (9)
    assert [k for k, _j in tried] == [2, 9] and len(best.cores) == 9
    assert energy(ev, prof, best) < energy(ev, prof, fewest)
    assert estimate(ev, prof, best)["time"]["busiest_core_s"] < estimate(ev, prof, fewest)["time"]["busiest_core_s"]
    # where every core more costs more (chip crossings, at the paper's width), the fewest cores are the least energy
    best, tried = balance(dep.folded, conn, prof, neuron_work(ev, prof), fewest, lambda m: len(m.cores))
    assert best is fewest and [k for k, _j in tried] == [2, 9]


def _hand_events(**kw):
    return Events(images=1, denoising_steps=1, num_steps=2, lava_steps_per_image=4, lava_steps_single_image=6,
                  neurons={"a": 2, "b": 1}, spikes={"a": np.array([3.0, 1.0])},
                  synops={"a": np.zeros(2), "b": np.array([4.0])}, input_synops={"a": np.array([5.0, 5.0]),
                                                                                  "b": np.zeros(1)},
                  active_updates={"a": 6.0, "b": 2.0}, spikes_per_step={"a": np.array([4.0])},
                  ann_macs_per_evaluation={"a": 8.0, "b": 2.0}, input_macs_per_evaluation=8.0, **kw)


HAND = dict(synaptic_op_energy=10, neuron_update_energy_active=2, neuron_update_energy_inactive=1,
            spike_energy_within_tile=1, hop_energy_east_west=0, hop_energy_north_south=0, synaptic_op_time=1,
            neuron_update_time_active=1, neuron_update_time_inactive=1, spike_time_within_tile=0,
            hop_time_east_west=0, hop_time_north_south=0, barrier_sync_time_one_tile=100,
            barrier_sync_time_full_chip=100, static_power=1, cores_per_tile=1, tiles_per_row=2,
            max_neurons_per_core=2)


def _hand_mapping(per_chip):
    """"a" on core 0, "b" on core 1; every spike of "a" goes to core 1."""
    return Mapping("hand", [Core(0, "a", 2, 2, 2, 2), Core(1, "b", 1, 2, 2, 2)], {"a": np.array([0, 0]),
                   "b": np.array([1])}, {("a", 1): Route(np.array([0]), {})}, per_chip, 1, 2)


def test_chip_to_chip_messages_latency_and_barrier(tmp_path):
    prof = _profile(tmp_path, chip_to_chip_energy=100, chip_to_chip_time=50, cores_per_chip=1, **HAND)
    c = estimate(_hand_events(), prof, _hand_mapping(per_chip=1))  # two chips of one core
    pj = {k: v / PJ for k, v in c["by_category_J"].items()}
    assert pj["routing"] == pytest.approx(4 * 1) and pj["chip-to-chip"] == pytest.approx(4 * 100)
    t = {k: v / NS for k, v in c["time"].items() if k.endswith("_s")}
    # busiest core 0: (6 + 2 + 10) x 1 ns over 4 steps; one chip crossing of 50 ns; barrier 100 + 2 x 1 x 50 ns
    assert t["busiest_core_s"] == pytest.approx(4.5) and t["spike_latency_s"] == pytest.approx(50)
    assert t["barrier_s"] == pytest.approx(200) and t["lava_step_s"] == pytest.approx(254.5)
    assert pj["static"] == pytest.approx(1.0 * 2 * 4 * 254.5e3)  # 1 W x 2 chips x 4 steps
    one_chip = estimate(_hand_events(), prof.with_overrides({"cores_per_chip": 2}), _hand_mapping(per_chip=2))
    assert one_chip["by_category_J"]["chip-to-chip"] == 0 and one_chip["time"]["barrier_s"] / NS == pytest.approx(100)


def test_every_total_comes_with_bounds_and_a_sensitivity_row_per_uncertain_quantity(tmp_path):
    prof = _profile(tmp_path, cores_per_chip=4, graded_synaptic_op_energy=30, input_message_energy=2,
                    bounds={"synaptic_op_energy": (5, 20), "graded_synaptic_op_energy": (10, 60)}, **HAND)
    ev = _hand_events(input_messages=7.0)
    c = estimate(ev, prof, _hand_mapping(per_chip=4))
    pj = {k: v / PJ for k, v in c["by_category_J"].items()}
    # 4 binary ops at 10 pJ, 10 graded ops at 30 pJ, 7 host messages at 2 pJ
    assert pj["synaptic"] == pytest.approx(40) and pj["input synaptic"] == pytest.approx(300)
    assert pj["input messages"] == pytest.approx(14)
    total = c["energy_per_image_J"] / PJ
    lo, hi = (x / PJ for x in c["range"]["energy_per_image_J"])
    assert lo == pytest.approx(total - 4 * 5 - 10 * 20) and hi == pytest.approx(total + 4 * 10 + 10 * 30)
    assert c["range"]["time_per_image_s"][0] == c["range"]["time_per_image_s"][1] == c["time"]["per_image_s"]
    rows = {r["quantity"]: r for r in c["sensitivity"]}
    assert set(rows) == {"synaptic_op_energy", "graded_synaptic_op_energy"}
    assert c["sensitivity"][0]["quantity"] == "graded_synaptic_op_energy"  # 10 x 50 pJ of swing against 4 x 15
    g = rows["graded_synaptic_op_energy"]
    assert g["at_low"]["energy_J"] / PJ == pytest.approx(total - 200) and g["at_high"]["energy_J"] / PJ == \
        pytest.approx(total + 300)


def test_one_image_alone_pays_its_longer_run(tmp_path):
    prof = _profile(tmp_path, cores_per_chip=4, **HAND)
    c = estimate(_hand_events(), prof, _hand_mapping(per_chip=4))
    step = c["time"]["lava_step_s"]
    assert c["single_image"]["time_s"] == pytest.approx(6 * step)
    assert c["time"]["per_image_s"] == pytest.approx(4 * step)
    # two more Lava steps: 3 neurons x 2 more inactive updates at 1 pJ, and static power over 6 steps, not 4
    dynamic = c["energy_per_image_J"] - c["by_category_J"]["static"]
    assert c["single_image"]["energy_J"] == pytest.approx(dynamic + 6 * PJ + 1.0 * 1 * 6 * step)
    assert c["single_image"]["energy_J"] > c["energy_per_image_J"]


def test_builtin_profiles_give_value_low_high_and_source_for_every_quantity():
    import tomllib
    from importlib import resources

    for name in builtin_names():
        data = tomllib.loads(resources.files("spikediff.hardware_sim").joinpath("profiles", f"{name}.toml").read_text())
        for key, q in data["quantity"].items():
            assert {"value", "low", "high", "unit", "source"} <= set(q), (name, key)
            assert q["low"] <= q["value"] <= q["high"], (name, key)
            assert q["source"].strip()
    l2 = load_profile("loihi2")
    assert l2.get("memory_per_core") == 192 * 1024 and l2.get("conv_kernel_shared") == 1
    assert l2.quantities["static_power"].high == pytest.approx(0.281775)  # the SDNN notebook's measurement
    assert "synaptic_op_energy" in l2.uncertain() and "memory_per_core" not in l2.uncertain()
    assert load_profile("loihi1").get("conv_kernel_shared") == 0 and "memory_per_core" not in load_profile("loihi1")


def test_bounds_that_do_not_hold_the_value_are_refused(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[quantity.static_power]\nvalue = 1\nlow = 2\nhigh = 3\nunit = "W"\nsource = "s"\n')
    with pytest.raises(SpikediffError, match="needs low <= value <= high"):
        load_profile(str(bad))
    bad.write_text('name = "x"\n[quantity.conv_kernel_shared]\nvalue = 2\nunit = "flag"\nsource = "s"\n')
    with pytest.raises(SpikediffError, match="is a flag"):
        load_profile(str(bad))


def _write_netx(path, frame_bias=None):
    """A small netx file as lava-dl writes them: input layer (LOIHI neurons), conv, flatten, dense."""
    import h5py

    rng = np.random.default_rng(3)
    with h5py.File(path, "w") as h5:
        lay = h5.create_group("layer")

        def neuron(g, vth=25, i_decay=4096, v_decay=1024):
            n = g.create_group("neuron")
            n.create_dataset("type", data=b"LOIHI")
            for k, v in (("vThMant", vth), ("iDecay", i_decay), ("vDecay", v_decay), ("refDelay", 1)):
                n.create_dataset(k, data=v)

        g = lay.create_group("0")
        g.create_dataset("type", data=[b"input"])
        g.create_dataset("shape", data=np.array([2, 5, 6]))
        neuron(g)
        g = lay.create_group("1")
        g.create_dataset("type", data=[b"conv"])
        g.create_dataset("shape", data=np.array([3, 2, 2]))
        g.create_dataset("weight", data=rng.integers(-8, 9, (3, 2, 3, 3)).astype(np.float32) * 2)
        g.create_dataset("bias", data=np.array([4.0, -2.0, 9.0], np.float32))
        for k, v in (("stride", [2, 2]), ("padding", [0, 0]), ("dilation", [1, 1])):
            g.create_dataset(k, data=np.array(v))
        g.create_dataset("groups", data=1)
        neuron(g)
        lay.create_group("2").create_dataset("type", data=[b"flatten"])
        g = lay.create_group("3")
        g.create_dataset("type", data=[b"dense"])
        g.create_dataset("shape", data=np.array([4, 1, 1]))
        g.create_dataset("weight", data=rng.integers(-6, 7, (4, 12)).astype(np.float32) * 2)
        g.create_dataset("bias", data=np.zeros(4, np.float32))
        neuron(g, vth=131071, v_decay=0)
        h5.create_dataset("simulation/tSample", data=8)
    return path


def test_a_netx_file_reads_back_with_its_own_integers(tmp_path):
    import h5py

    path = _write_netx(tmp_path / "tiny.net")
    net = read_netx(path)
    assert net.input_shape == (2, 5, 6) and net.steps == 8 and net.is_lif
    assert [(layer.kind, layer.shape) for layer in net.layers] == [("input", (2, 5, 6)), ("conv", (3, 2, 2)),
                                                                  ("dense", (4,))]
    with h5py.File(path) as h5:
        conv_w, dense_w = h5["layer/1/weight"][()], h5["layer/3/weight"][()]
    frame_whc = np.arange(6 * 5 * 2).reshape(6, 5, 2) % 40  # (W, H, C), as lava-dl datasets give frames
    dep = to_deployment(net, input_bias=frame_whc)
    fx = dep.fixed
    assert np.array_equal(fx.weights["w1"], conv_w) and np.array_equal(fx.weights["w3"], dense_w)
    assert np.array_equal(fx.populations["n0"].bias_mant, frame_whc.transpose(2, 1, 0))
    assert np.array_equal(fx.populations["n1"].bias_mant[:, 0, 0], [4, -2, 9])
    q = fx.populations["n3"]
    assert (q.vth, q.du, q.dv, int(q.bias_exp.max())) == (131071, 4095, 0, 6)
    assert dep.timing.num_steps == 8 and dep.plan.latency["n3"] == 3
    # the input layer's a_in is its input port: a frame as graded input gives the spikes of the frame as bias
    as_bias = Simulator(dep).evaluate(np.zeros((1, 2, 5, 6)))
    as_input = Simulator(to_deployment(net)).evaluate(frame_whc.transpose(2, 1, 0)[None].astype(float))
    assert as_bias["spikes"]["n0"].sum() > 0
    for k in ("n0", "n1", "n3"):
        assert np.array_equal(as_bias["spikes"][k], as_input["spikes"][k])
    # the reader refuses what netx cannot build
    with h5py.File(path, "a") as h5:
        h5["layer/2/type"][...] = [b"pool"]
    with pytest.raises(SpikediffError, match="type 'pool' is not supported"):
        read_netx(path)


def test_netx_chains_written_by_spikediff_read_back_unchanged(tmp_path):
    from spikediff.export.netx_hdf5 import find_chains, write_chain

    dep = _two_layer_graph()
    g = _chain(_inp(16), nir.Linear(weight=np.ones((8, 16))), _lif(8), nir.Linear(weight=np.eye(6, 8) * 0.5),
               _lif(6), nir.Linear(weight=np.ones((1, 6))), _li(1), _out(1))
    dep = compile_graph(g, num_steps=4, fixed_point=True)
    (chain,) = find_chains(dep.folded, dep.fixed)
    path = write_chain(tmp_path / "chain.net", chain, dep.folded, dep.fixed)
    net = read_netx(path, input_shape=(16,))
    assert [layer.shape for layer in net.layers] == [(8,), (6,)]
    for layer, f in zip(net.layers, chain, strict=True):
        q = dep.fixed.populations[f.syn.dst]
        assert np.array_equal(layer.weight, dep.fixed.weights[f.syn.name])
        assert (layer.neuron["vth"], layer.neuron["du"], layer.neuron["dv"]) == (q.vth, q.du, q.dv)


LAVA_DL = Path(os.environ.get("LAVA_DL_REPO", "/work/.mirror/lava-nc+lava-dl/repo"))


def _lava_dl_file(tmp_path, rel):
    """A file of lava-dl's repository (a bare mirror read with git, or a checkout), or skip."""
    import subprocess

    if (LAVA_DL / rel).is_file():
        return LAVA_DL / rel
    out = tmp_path / Path(rel).name
    got = subprocess.run(["git", "-C", str(LAVA_DL), "show", f"HEAD:{rel}"], capture_output=True)
    if got.returncode or not got.stdout:
        pytest.skip(f"lava-dl's {rel} is not available here (set LAVA_DL_REPO)")
    out.write_bytes(got.stdout)
    return out


def test_lava_dl_pilotnet_reads_back_bit_exact_and_maps_as_lava_did(tmp_path):
    net_path = _lava_dl_file(tmp_path, "tutorials/lava/lib/dl/netx/pilotnet_snn/network.net")
    frame = np.load(_lava_dl_file(tmp_path, "tests/lava/lib/dl/netx/gts/pilotnet_lif/image.npy"))
    spikes = np.load(_lava_dl_file(tmp_path, "tests/lava/lib/dl/netx/gts/pilotnet_lif/input.npy"))  # (W, H, C, t)
    dep = to_deployment(read_netx(net_path), input_bias=frame)
    res = Simulator(dep).evaluate(np.zeros((1, 3, 66, 200)))
    # the input layer's spikes per step, as lava-dl recorded them on Lava (the first 16 steps: one reset interval)
    assert np.array_equal(res["spikes"]["n0"][0].numpy(), spikes.sum(axis=(0, 1, 2))[:16])
    m = map_to_cores(dep.folded, Connectivity(dep.folded, dep.fixed), load_profile("loihi2"), "lava")
    # Lava's per-core table (pilotnet_snn/benchmark.ipynb): 13, 25, 13, 3, 3, 2 cores for the input and conv layers
    cores = _per_population(m)
    assert [cores[f"n{i}"] for i in range(6)] == [13, 25, 13, 3, 3, 2]
    assert max(c.neurons for c in m.cores) == 3168


def test_cli_reports_a_netx_network_with_both_mappings_ranges_and_single_inference_figures(tmp_path):
    import json

    from conftest import run_cli

    path = _write_netx(tmp_path / "tiny.net")
    np.save(tmp_path / "frame.npy", np.arange(6 * 5 * 2).reshape(6, 5, 2) % 40)
    out = tmp_path / "rep"
    r = run_cli("report", path, "--input-bias", tmp_path / "frame.npy", "--profile", "loihi2", "-o", out, "--quiet")
    assert r.returncode == 0, r.stderr
    rep = json.loads((out / "report.json").read_text())
    assert rep["per"] == "inference" and rep["snn_steps"] == {"network": 8}
    h = rep["headline"]["loihi2"]
    assert h["mapping"] == "least energy" and h["cores"] >= h["fewest_cores"]["cores"] == 3
    for key in ("energy", "time", "single_image", "single_image_time"):
        value = h[f"{key}_per_image_J" if key == "energy" else f"{key}_per_image_s" if key == "time" else
                  f"{key}_J" if key == "single_image" else f"{key}_s"]
        lo, hi = h[f"{key}_range_J" if key in ("energy", "single_image") else f"{key}_range_s"]
        assert 0 < lo <= value <= hi, key
    assert h["single_image_J"] >= h["energy_per_image_J"]  # one inference alone: nothing else shares the chip
    md = (out / "report.md").read_text()
    assert "| loihi2 | fewest cores | 3 |" in md and "What moves the loihi2 total most" in md
    r = run_cli("report", "-n", "1", "--input-bias", tmp_path / "frame.npy", "-o", tmp_path / "x")
    assert r.returncode == 2 and "--input-bias is for lava-dl netx networks" in r.stderr


def test_networks_resident_together_share_their_chips_and_their_static_power(tmp_path):
    from spikediff.hardware_sim.report import chips_together, price_networks

    values = dict(synaptic_op_energy=1, neuron_update_energy_active=1, neuron_update_energy_inactive=1,
                  spike_energy_within_tile=1, synaptic_op_time=1, neuron_update_time_active=1,
                  neuron_update_time_inactive=1, barrier_sync_time_one_tile=1, barrier_sync_time_full_chip=1,
                  static_power=10, memory_per_core=10000, **{**LOIHI2_LIKE, "cores_per_chip": 3})
    prof = _profile(tmp_path, **values)
    parts = {}
    for role, seed in (("denoiser", 0), ("decoder", 1)):
        dep = _two_layer_graph()
        x = np.random.default_rng(seed).uniform(0, 2, (4, 16))
        res = Simulator(dep).evaluate(x)
        tally = EventTally(dep.plan)
        tally.add(res)
        parts[role] = {**tally.to_dict(), "deployment": dep, "items": 4, "evaluations": 1,
                       "counters": {k: {"active": c.numpy()} for k, c in res["spikes"].items()}}
    events, costs, mappings = price_networks(parts, [prof])
    # fewest cores: 2 + 2, two chips of 3 cores (each network alone would fit one); the 2 spare cores are shared
    # out, and both chips draw static power while either network runs
    chips = chips_together(mappings)["hand"]
    assert chips["fewest_cores"] == {"cores": 4, "chips": 2, "fits_one_chip": False}
    assert chips["cores"] == 6 and chips["chips"] == 2
    for role in parts:
        c = costs[role][0]
        assert mappings[role]["hand"]["chips"] == 1
        assert c["by_category_J"]["static"] == pytest.approx(10 * 2 * c["time"]["per_image_s"])
        assert c["energy_per_image_J"] <= c["fewest_cores"]["energy_per_image_J"]


def test_networks_sharing_a_chip_are_balanced_again_when_their_split_cores_spill_over():
    """Work-balanced cores that do not fit are split further, so two networks given 60 + 68 of a 128-core chip
    can need 131 cores: rather than powering a second chip, the one that outgrew its share is balanced again on
    fewer cores (seen on a spiking-vq sampler at 7 unmasking steps: 3.54 mJ on two chips, 2.81 on one)."""
    from types import SimpleNamespace

    from spikediff.hardware_sim.report import _fit_shared

    def mapping(cores):
        return SimpleNamespace(cores=[None] * cores)

    overhead = {"denoiser": 3, "decoder": 0}  # the denoiser's balanced cores split into 3 more
    asked = []

    def balanced(role, budget):
        asked.append((role, budget))
        return mapping(budget + overhead[role]), [(budget + overhead[role], 1.0 / budget)]

    def total(maps, chips):  # static power per chip dominates; more cores per network is cheaper on a chip
        return 100 * chips + sum(1000 / len(m.cores) for m in maps.values())

    fewest = {"denoiser": mapping(40), "decoder": mapping(50)}
    share = {"denoiser": 60, "decoder": 68}
    found = {r: balanced(r, share[r]) for r in share}
    asked.clear()
    got, chips = _fit_shared(found, fewest, share, 1, 128, balanced, total)
    assert chips == 1 and asked == [("denoiser", 57)]  # only the network that grew, by what it grew
    assert {r: len(m.cores) for r, (m, _t) in got.items()} == {"denoiser": 60, "decoder": 68}
    assert got["denoiser"][1] == [(60, 1.0 / 57), (63, 1.0 / 60)]  # every budget tried is reported
    # when a second chip is worth its static power, the spilled mappings are kept
    got, chips = _fit_shared(found, fewest, share, 1, 128, balanced,
                             lambda maps, chips: 0.01 * chips + sum(1000 / len(m.cores) for m in maps.values()))
    assert chips == 2 and len(got["denoiser"][0].cores) == 63
    # and when even their fewest cores do not leave room, the fewest-cores mappings on their own chips
    overhead["decoder"] = 200
    found = {r: balanced(r, share[r]) for r in share}
    got, chips = _fit_shared(found, fewest, share, 1, 128, balanced, total)
    assert chips == 1 and {r: len(m.cores) for r, (m, _t) in got.items()} == {"denoiser": 40, "decoder": 50}
