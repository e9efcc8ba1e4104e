"""hardware_sim: the batched simulator, connectivity counts, chip mapping and the cost model against
hand-computed expectations, the profiles' sources, and `spikediff report`."""

import json

import nir
import numpy as np
import pytest
import torch
from conftest import run_cli
from test_export import _chain, _inp, _li, _lif, _out, _pooling_graph

from spikediff import SpikediffError
from spikediff.diffusion import NoiseSchedule
from spikediff.diffusion.sampler import initial_noise
from spikediff.export.deployment import compile_graph, compile_sampler
from spikediff.export.nir_graph import sampler_graphs
from spikediff.export.plan import CONST
from spikediff.hardware_sim.connectivity import Connectivity
from spikediff.hardware_sim.cost import barrier_time, estimate
from spikediff.hardware_sim.events import Events, count_events
from spikediff.hardware_sim.mapping import Core, Mapping, Route, map_to_cores
from spikediff.hardware_sim.profiles import builtin_names, load_profile, parse_overrides
from spikediff.hardware_sim.sampler import sample_sim
from spikediff.models import DenoiserConfig, SpikingDenoiser

PROFILE_HEAD = 'name = "{name}"\ntitle = "hand-made"\n'


def _profile(tmp_path, name="hand", **values):
    from spikediff.hardware_sim.profiles import UNITS

    text = PROFILE_HEAD.format(name=name) + "".join(
        f'[quantity.{k}]\nvalue = {v}\nunit = "{UNITS[k]}"\nsource = "test"\n' for k, v in values.items())
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return load_profile(str(path))


@pytest.fixture(scope="module")
def tiny_graph():
    """The tiny denoiser, compiled in fixed point as every command compiles it."""
    torch.manual_seed(0)
    model = SpikingDenoiser(DenoiserConfig(image_size=8, channels=4, hidden=16)).eval()
    return compile_sampler(sampler_graphs(model, NoiseSchedule(1000, "v_prediction")), fixed_point=True)


def sample_fixed(sd, noise, steps, **kw):
    """The whole-run simulator result with the loop network's event tallies at the top, as before."""
    sim = sample_sim(sd, len(noise), steps, noise=noise, **kw)
    return {**sim, **sim["parts"]["denoiser"]}


def test_simulator_results_do_not_depend_on_the_batch_size(tiny_graph):
    noise = initial_noise(5, (1, 8, 8), 3).numpy()
    record = {"e0": np.arange(10), "d1": np.array([3, 1])}
    one = sample_fixed(tiny_graph, noise, 3, batch_size=1, record=record)
    many = sample_fixed(tiny_graph, noise, 3, batch_size=4, record=record)
    np.testing.assert_array_equal(one["images"], many["images"])
    assert one["raster"]["e0"].shape == (3 * 4, 10) and one["raster"]["d1"].shape == (3 * 4, 2)
    np.testing.assert_array_equal(one["raster"]["d1"], many["raster"]["d1"])
    for k, c in one["counters"].items():
        np.testing.assert_array_equal(c["active"], many["counters"][k]["active"])
        np.testing.assert_array_equal(one["neuron_spikes"][k], many["neuron_spikes"][k])
        assert one["neuron_spikes"][k].sum() == c["active"].sum()  # per-neuron totals add up to the counters
    assert one["active_updates"] == many["active_updates"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_simulator_on_cuda_equals_cpu(tiny_graph):
    noise = initial_noise(4, (1, 8, 8), 3).numpy()
    cpu, gpu = sample_fixed(tiny_graph, noise, 3), sample_fixed(tiny_graph, noise, 3, device="cuda")
    np.testing.assert_array_equal(cpu["images"], gpu["images"])
    for k, c in cpu["counters"].items():
        np.testing.assert_array_equal(c["active"], gpu["counters"][k]["active"])


def test_connectivity_counts_a_padded_convolution_exactly():
    folded = compile_graph(_pooling_graph()[0], num_steps=1).folded
    conn = Connectivity(folded, None)
    conv = next(f for f in folded.synapses if f.syn.name == "conv")  # 2 -> 3 channels, 3x3, padding 1, 8x8
    fanout = conn.pull(conv, np.ones(conn.size("a"))).reshape(2, 8, 8)
    nonzero = (conv.weight != 0).sum()
    assert nonzero == 3 * 2 * 9
    # a corner pixel reaches 2x2 output positions of each of the 3 channels, an inner one 3x3
    assert fanout[0, 0, 0] == 3 * 4 and fanout[1, 4, 4] == 3 * 9 and fanout[0, 0, 4] == 3 * 6
    assert conn.synapses(conv) == fanout.sum()
    # brute force: every (output position, kernel offset) inside the image
    expected = sum(3 * sum(1 for dy in (-1, 0, 1) for dx in (-1, 0, 1) if 0 <= y + dy < 8 and 0 <= x + dx < 8)
                   for y in range(8) for x in range(8)) * 2
    assert conn.synapses(conv) == expected
    spikes = np.zeros(conn.size("in"))
    spikes[0] = 5  # five spikes from input pixel (0, 0) of channel 0: 5 synaptic ops at each of its 12 targets
    ops = conn.deliver(conv, spikes)
    assert ops.sum() == 5 * 12 and set(np.unique(ops)) == {0, 5}


def _two_layer_graph():
    """Input(4) -> Linear (every weight 0.5) -> LIF(6) -> Linear (every weight 0.25) -> LI(2)."""
    return _chain(_inp(4), nir.Linear(weight=np.full((6, 4), 0.5, dtype=np.float32)), _lif(6),
                  nir.Linear(weight=np.full((2, 6), 0.25, dtype=np.float32)), _li(2), _out(2))


def test_chip_mapping_respects_each_per_core_limit(tmp_path):
    dep = compile_graph(_two_layer_graph(), num_steps=1, fixed_point=True)
    folded = dep.folded
    conn = Connectivity(folded, dep.fixed)
    assert conn.fan_in("n2").tolist() == [4] * 6 and conn.fan_in("n4").tolist() == [6] * 2
    base = dict(cores_per_chip=4, max_neurons_per_core=4, bits_per_synapse=8, neuron_state_bytes=0,
                max_fan_in_axons_per_core=100)
    # memory 10 bytes: a hidden neuron needs 4 (2 per core), a readout neuron 6 (1 per core)
    m = map_to_cores(folded, conn, _profile(tmp_path, synaptic_memory_per_core=10, max_fan_out_axons_per_core=100,
                                            **base))
    assert [(c.population, c.neurons, c.memory_bytes, c.fan_in_axons) for c in m.cores] == [
        ("n2", 2, 8, 4), ("n2", 2, 8, 4), ("n2", 2, 8, 4), ("n4", 1, 6, 6), ("n4", 1, 6, 6)]
    assert [c.fan_out_axons for c in m.cores[:3]] == [4, 4, 4]  # 2 neurons x 2 readout cores
    assert m.limits == {"n2": "synaptic memory", "n4": "synaptic memory"}
    assert len(m.cores) == 5 and m.chips == 2 and not m.fits_one_chip
    # fan-out at most 3: two neurons per core send 4 routes, so the hidden layer is split to one neuron per core
    m = map_to_cores(folded, conn, _profile(tmp_path, synaptic_memory_per_core=10, max_fan_out_axons_per_core=3,
                                            **base))
    assert [c.neurons for c in m.cores if c.population == "n2"] == [1] * 6 and m.limits["n2"] == "fan-out axons"
    assert max(c.fan_out_axons for c in m.cores) == 2
    # fan-in at most 5: a readout neuron listens to 6 hidden neurons and cannot be placed anywhere
    with pytest.raises(SpikediffError, match="'n4': one neuron needs 6 bytes and 6 fan-in axons"):
        map_to_cores(folded, conn, _profile(tmp_path, synaptic_memory_per_core=10, max_fan_out_axons_per_core=100,
                                            **{**base, "max_fan_in_axons_per_core": 5}))
    with pytest.raises(SpikediffError, match="not a chip"):
        map_to_cores(folded, conn, load_profile("ac_mac_45nm"))


def test_a_route_holds_whole_cores_and_partial_ones_exactly():
    """A route (the source neurons that send to one target core) is kept per source core: whole cores as indices,
    partly sending cores as their neurons; it answers fan-out counts and spike sums as the boolean mask would."""
    rng = np.random.default_rng(1)
    owner = np.repeat(np.arange(7), [5, 3, 8, 1, 6, 4, 2])
    rng.shuffle(owner)  # a core's neurons need not be contiguous
    sizes = np.bincount(owner)
    spikes = rng.integers(0, 9, len(owner)).astype(float)
    per_core = np.bincount(owner, weights=spikes)
    masks = []
    for _ in range(6):
        sends = rng.random(len(owner)) < 0.5
        sends[owner == rng.integers(7)] = True  # at least one whole core
        masks.append(sends)
    masks.append(np.zeros(len(owner), dtype=bool))
    routes = [Route.of(m, owner, sizes) for m in masks]
    for m, r in zip(masks, routes, strict=True):
        cores, counts = r.senders(sizes)
        want = np.bincount(owner[m], minlength=7)
        assert cores.tolist() == np.flatnonzero(want).tolist() and counts.tolist() == want[want > 0].tolist()
        assert all(sizes[c] == want[c] for c in r.whole) and all(len(i) < sizes[c] for c, i in r.part.items())
        cores, sums = r.sums(spikes, per_core)
        np.testing.assert_allclose(sums, np.bincount(owner[m], weights=spikes[m], minlength=7)[cores])
    union = routes[0].union(routes[1], sizes)
    for _ in range(2):  # a union that makes a partly sending core whole counts it whole
        union = union.union(routes[2], sizes)
    cores, counts = union.senders(sizes)
    want = np.bincount(owner[masks[0] | masks[1] | masks[2]], minlength=7)
    assert counts.tolist() == want[want > 0].tolist() and union.whole.tolist() == np.flatnonzero(want == sizes).tolist()


def _hand_events():
    return Events(images=1, denoising_steps=1, num_steps=2, lava_steps_per_image=4, lava_steps_single_image=6,
                  neurons={"a": 2, "b": 1}, spikes={"a": np.array([3.0, 1.0])},
                  synops={"a": np.zeros(2), "b": np.array([4.0])}, input_synops={"a": np.array([5.0, 5.0]),
                                                                                  "b": np.zeros(1)},
                  active_updates={"a": 6.0, "b": 2.0}, spikes_per_step={"a": np.array([4.0])},
                  ann_macs_per_evaluation={"a": 8.0, "b": 2.0}, input_macs_per_evaluation=8.0)


def test_cost_model_matches_a_hand_computation(tmp_path):
    prof = _profile(tmp_path, synaptic_op_energy=10, neuron_update_energy_active=2, neuron_update_energy_inactive=1,
                    spike_energy_within_tile=1, hop_energy_east_west=3, hop_energy_north_south=5, synaptic_op_time=1,
                    neuron_update_time_active=1, neuron_update_time_inactive=1, spike_time_within_tile=0,
                    hop_time_east_west=2, hop_time_north_south=0, barrier_sync_time_one_tile=100,
                    barrier_sync_time_full_chip=100, static_power=1, cores_per_chip=4, cores_per_tile=1,
                    tiles_per_row=2, max_neurons_per_core=2)
    # "a" on core 0 (tile (0, 0)), "b" on core 1 (tile (1, 0)): every spike of "a" travels one east-west hop
    mapping = Mapping("hand", [Core(0, "a", 2, 2, 2, 2), Core(1, "b", 1, 2, 2, 2)],
                      {"a": np.array([0, 0]), "b": np.array([1])}, {("a", 1): Route(np.array([0]), {})}, 4, 1, 2)
    c = estimate(_hand_events(), prof, mapping)
    pj = {k: v / 1e-12 for k, v in c["by_category_J"].items()}  # in pJ (pytest.approx's absolute slack is 1e-12)
    ns = {k: v / 1e-9 for k, v in c["time"].items() if k.endswith("_s")}
    assert pj["synaptic"] == pytest.approx(4 * 10) and pj["input synaptic"] == pytest.approx(10 * 10)
    # a: 6 active x 2 + (2 neurons x 4 steps - 6) x 1; b: 2 x 2 + (4 - 2) x 1
    assert pj["neuron"] == pytest.approx(14 + 6)
    assert pj["routing"] == pytest.approx(4 * (1 + 3))
    # busiest core: core 0, (6 + 2 updates + 10 input ops) x 1 ns over 4 steps; plus 2 ns hop and 100 ns barrier
    assert ns["busiest_core_s"] == pytest.approx(4.5) and c["time"]["busiest_core"] == 0
    assert ns["lava_step_s"] == pytest.approx(106.5)
    assert ns["per_image_s"] == pytest.approx(4 * 106.5) and ns["single_image_latency_s"] == pytest.approx(6 * 106.5)
    assert pj["static"] == pytest.approx(1.0 * 1 * 4 * 106.5e3)  # 1 W x 1 chip x 426 ns
    assert c["energy_per_image_J"] / 1e-12 == pytest.approx(40 + 100 + 20 + 16 + 426e3)
    assert c["by_layer_J"]["a"]["routing"] / 1e-12 == pytest.approx(16) and c["by_layer_J"]["b"]["routing"] == 0
    assert c["left_out"] == []


def test_ac_mac_convention_and_the_ann_twin_match_a_hand_computation():
    c = estimate(_hand_events(), load_profile("ac_mac_45nm"))
    pj = {k: v / 1e-12 for k, v in c["by_category_J"].items()}
    # 4 synaptic ops from spikes x 0.9 pJ, the host input as 8 MACs per evaluation x 4.6 pJ
    assert pj == pytest.approx({"synaptic": 4 * 0.9, "input MAC": 8 * 4.6})
    assert c["ann_twin"]["macs_per_image"] == 10 and c["ann_twin"]["energy_per_image_J"] / 1e-12 == pytest.approx(46)
    assert set(c["left_out"]) == {"neuron updates", "time per image"}


def test_barrier_time_runs_from_one_tile_to_a_full_chip():
    prof = load_profile("loihi1")  # 113 ns (1 tile) .. 465 ns (32 tiles of 4 cores)
    assert barrier_time(prof, 1) / 1e-9 == pytest.approx(113)
    assert barrier_time(prof, 32) / 1e-9 == pytest.approx(465) and barrier_time(prof, 200) / 1e-9 == pytest.approx(465)
    assert barrier_time(prof, 16.5) / 1e-9 == pytest.approx(289)


def test_profiles_trace_every_number_to_a_source():
    assert set(builtin_names()) >= {"loihi1", "loihi2", "ac_mac_45nm"}
    for name in builtin_names():
        prof = load_profile(name)
        assert prof.quantities and all(q.source.strip() for q in prof.quantities.values())
    l1 = load_profile("loihi1")
    table2 = {"synaptic_op_energy": 23.6, "neuron_update_energy_active": 81, "neuron_update_energy_inactive": 52,
              "spike_energy_within_tile": 1.7, "hop_energy_east_west": 3.0, "hop_energy_north_south": 4.0,
              "barrier_sync_time_one_tile": 113, "barrier_sync_time_full_chip": 465}
    for key, value in table2.items():
        assert l1.get(key) == value and "Davies et al. 2018, Table 2" in l1.quantities[key].source, key
    assert l1.get("max_neurons_per_core") == 1024 and l1.get("cores_per_chip") == 128
    l2 = load_profile("loihi2")
    # Intel publishes no per-op energy for Loihi 2: each must say it is an assumption
    assert all(l2.quantities[k].source.startswith("assumption") for k in table2)
    assert "Static Power : 0.232078 W" in l2.quantities["static_power"].source
    conv = load_profile("ac_mac_45nm")
    assert conv.get("synaptic_op_energy") == 0.9 and conv.get("mac_energy") == 4.6
    assert all("Horowitz" in q.source for q in conv.quantities.values())


def test_bad_profiles_and_overrides_give_clear_errors(tmp_path):
    with pytest.raises(SpikediffError, match="'nope': not a built-in profile"):
        load_profile("nope")
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[quantity.static_power]\nvalue = 1\nunit = "mW"\nsource = "s"\n')
    with pytest.raises(SpikediffError, match="'static_power' must be in W, got 'mW'"):
        load_profile(str(bad))
    bad.write_text('name = "x"\n[quantity.static_power]\nvalue = 1\nunit = "W"\n')
    with pytest.raises(SpikediffError, match="needs value, unit and source"):
        load_profile(str(bad))
    bad.write_text("name = \n")
    with pytest.raises(SpikediffError, match="bad.toml: not valid TOML"):
        load_profile(str(bad))
    assert parse_overrides(["loihi2.static_power=0.3"]) == {"loihi2": {"static_power": 0.3}}
    with pytest.raises(SpikediffError, match="expected PROFILE.QUANTITY=VALUE"):
        parse_overrides(["static_power=0.3"])
    over = load_profile("loihi2").with_overrides({"static_power": 0.5})
    assert over.get("static_power") == 0.5 and over.quantities["static_power"].source == "user override"
    with pytest.raises(SpikediffError, match="unknown quantity 'static'"):
        load_profile("loihi2").with_overrides({"static": 1})


def test_events_of_a_run_add_up(tiny_graph):
    noise = initial_noise(3, (1, 8, 8), 0).numpy()
    sim = sample_fixed(tiny_graph, noise, 2)
    conn = Connectivity(sim["deployment"].folded, sim["deployment"].fixed)
    ev = count_events(sim, conn)
    folded = sim["deployment"].folded
    # synaptic ops = spikes x fan-out, summed over the source neurons (a second way to count them)
    fired = {**sim["neuron_spikes"], CONST: np.full(1, 3 * 2 * sim["deployment"].num_steps)}  # CONST: every step
    by_source = sum((fired[f.syn.src] / 3 * conn.pull(f, np.ones(conn.size(f.syn.dst)))).sum()
                    for f in folded.synapses if f.syn.src != folded.plan.input)
    assert sum(s.sum() for s in ev.synops.values()) == pytest.approx(by_source)
    assert ev.totals()["spikes"] == pytest.approx(sum(c["active"].sum() for c in sim["counters"].values()) / 3)
    # every neuron is updated at every Lava step; active ones at most at every SNN step of every evaluation
    for name, n in ev.neurons.items():
        assert 0 <= ev.active_updates[name] <= n * ev.num_steps * ev.denoising_steps <= ev.updates(name)
    assert ev.active_updates["e0"] > 0
    # one image alone: its second evaluation starts once the first readout is complete, on the next
    # multiple of the period T = 4 Lava steps
    window = folded.plan.latency[folded.plan.readout] + 4
    assert ev.lava_steps_single_image == -(-window // 4) * 4 + window


def test_cli_report_writes_markdown_json_and_figures(tmp_path):
    out = tmp_path / "rep"
    # the small patch denoiser: a report of the default U-Net takes about two minutes
    r = run_cli("report", "mnist-patch", "-n", "2", "--steps", "2", "-o", out, "--set", "loihi2.static_power=0.5",
                "--quiet")
    assert r.returncode == 0, r.stderr
    for name in ("report.md", "report.json", "samples.png", "energy.png", "raster.png", "activity.png"):
        assert (out / name).stat().st_size > 0, name
    rep = json.loads((out / "report.json").read_text())
    assert [c["profile"] for c in rep["cost"]] == ["loihi1", "loihi2", "ac_mac_45nm"]
    for c in rep["cost"]:
        assert c["energy_per_image_J"] == pytest.approx(sum(c["by_category_J"].values()))
    assert rep["profiles"]["loihi2"]["quantities"]["static_power"] == {"value": 0.5, "unit": "W",
                                                                       "source": "user override"}
    assert rep["mapping"]["denoiser"]["loihi2"]["cores"] > 0 and rep["fixed_vs_float"]["mean_abs_pixel_diff"] < 0.2
    md = (out / "report.md").read_text()
    assert "| loihi1 |" in md and "Davies et al. 2018, Table 2" in md and "![spike raster](raster.png)" in md
    r = run_cli("report", "-n", "1", "--steps", "1", "--profile", "loihi9", "-o", tmp_path / "x")
    assert r.returncode == 2 and "hardware profile 'loihi9'" in r.stderr and not (tmp_path / "x").exists()
