"""Loihi fixed point: the integer arithmetic, the quantizer, and Lava's fixed_pt run against our bit-exact
simulator (hardware_sim), for single evaluations, hand-built graphs and the whole DDIM loop."""

import json

import numpy as np
import pytest
import torch
from conftest import run_cli
from test_export import _chain, _hand_built_graph, _inp, _li, _lif, _out, _pooling_graph

from spikediff.diffusion import NoiseSchedule
from spikediff.diffusion.sampler import initial_noise, sample_torch
from spikediff.export import loihi_arith
from spikediff.export.deployment import compile_graph, compile_sampler
from spikediff.export.nir_graph import sampler_graphs, to_nir
from spikediff.export.plan import NirGraphError
from spikediff.export.quantize import bias_to_lava, decay_to_lava, quantize_weights
from spikediff.export.simulator import evaluate
from spikediff.hardware_sim.sampler import sample_sim
from spikediff.models import DenoiserConfig, SpikingDenoiser
from spikediff.runtime.build import build


def _dense_chain_graph():
    """Input -> Affine -> LIF -> Linear -> LIF -> Linear -> LIF -> Linear -> LI: a dense chain fed by graded input."""
    import nir

    rng = np.random.default_rng(7)
    w = lambda o, i, s=1.0: rng.normal(0, s, (o, i)).astype(np.float32)  # noqa: E731
    graph = _chain(_inp(5), nir.Affine(weight=w(12, 5, 1.2), bias=np.full(12, 0.1, dtype=np.float32)), _lif(12),
                   nir.Linear(weight=w(8, 12)), _lif(8), nir.Linear(weight=w(6, 8)), _lif(6),
                   nir.Linear(weight=w(3, 6)), _li(3), _out(3))
    return graph, rng.uniform(0, 1.5, (3, 5)).astype(np.float32)


def test_decays_map_to_lavas_12_bit_parameters():
    assert decay_to_lava(1.0, "du", "n") == 4095  # Lava adds 1 to du: the current is replaced every step
    assert decay_to_lava(0.5, "du", "n") == 2047
    assert decay_to_lava(0.25, "dv", "n") == 1024 and decay_to_lava(0.0, "dv", "n") == 0
    with pytest.raises(NirGraphError, match="'layer3'.*not a multiple of 1/4096"):
        decay_to_lava(0.3, "dv", "layer3")
    with pytest.raises(NirGraphError, match="'acc'.*never decays"):
        decay_to_lava(0.0, "du", "acc")


def test_integer_arithmetic_matches_hand_computation():
    # v decays by 3072/4096 with truncation towards zero: 100 -> 75, -101 -> -75 (not -76)
    u, v = loihi_arith.cuba_update(np.array([0, 0]), np.array([100, -101]), np.array([0, 0]), 4095, 1024, 0, 0)
    assert u.tolist() == [0, 0] and v.tolist() == [75, -75]
    # input shifted by 6, bias mantissa << exponent; threshold 10 << 6 = 640: 10 * 64 = 640 does not fire, 641 does
    u, v, s = loihi_arith.lif_step(np.zeros(2), np.zeros(2), np.array([10, 10]), 4095, 0, 10, np.array([0, 1]), 0)
    assert u.tolist() == [640, 640] and s.tolist() == [False, True] and v.tolist() == [640, 0]
    assert loihi_arith.effective_bias(np.array([3, -3]), np.array([2, 2])).tolist() == [12, -12]
    # the current wraps at 24 bits, the voltage saturates
    u, v = loihi_arith.cuba_update(np.array([0]), np.array([(1 << 23) - 10]), np.array([1 << 17]), 4095, 0, 0, 0)
    assert u.tolist() == [-(1 << 23)] or u.tolist() == [(1 << 23)]  # exactly at the boundary: Lava's rule
    u, v = loihi_arith.cuba_update(np.array([0]), np.array([(1 << 23) - 10]), np.array([100]), 4095, 0, 0, 0)
    assert v.tolist() == [(1 << 23) - 1]


def test_weights_and_biases_fit_loihis_fields():
    w = quantize_weights(np.array([1.0, -1.0, 0.3, 2.0]), 254)
    assert w.tolist() == [254, -254, 76, 254] and (w % 2 == 0).all()
    mant, exp = bias_to_lava(np.array([100.0, -5000.0, 300000.0]), min_exp=0)
    assert np.abs(mant).max() <= 4095 and exp.tolist()[:2] == [0, 1] and exp.max() <= 7
    np.testing.assert_allclose(mant * 2.0 ** exp, [100, -5000, 300000], rtol=2e-3)
    mant, exp = bias_to_lava(np.array([100.0, 64.0 * 5000]))  # netx's exponent 6 unless the mantissa overflows
    assert exp.tolist() == [6, 7] and mant.tolist() == [2, 2500]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = SpikingDenoiser(DenoiserConfig(image_size=8, channels=4, hidden=16)).eval()
    return model, to_nir(model, NoiseSchedule(1000, "v_prediction"))


def _fixed_sampler(model):
    """The tiny denoiser compiled as ``spikediff`` compiles a sampler: calibrated fixed point."""
    return compile_sampler(sampler_graphs(model, NoiseSchedule(1000, "v_prediction")), fixed_point=True)


def test_quantizer_uses_the_whole_mantissa_and_keeps_currents_inside_24_bits(tiny):
    _model, graph = tiny
    dep = _fixed_sampler(_model).loop
    folded, fx = dep.folded, dep.fixed
    assert fx.input_scale >= 8 and fx.input_scale & (fx.input_scale - 1) == 0
    for name in folded.plan.populations:  # the largest weight into each population uses the whole mantissa
        assert max(np.abs(fx.weights[f.syn.name]).max() for f in folded.incoming(name)) >= 250, name
    for f in folded.synapses:  # rounding to even integers: at most one step of 2 / scale
        scale = fx.populations[f.syn.dst].scale / (fx.input_scale if f.syn.src == folded.plan.input else 1)
        assert fx.errors[f.syn.name]["max_abs_error"] <= 1.0001 / scale
    for q in fx.populations.values():
        assert q.vth is None or q.vth == q.scale  # threshold 1 at every scale
    x = torch.randn(8, 1, 8, 8) * 1.5
    res = evaluate(dep, _model.make_input(x, torch.randint(0, 1000, (8,))).numpy())
    assert all(peak < (1 << 17) for peak in res["max_input"].values())


def _lava_eval(dep, inputs, chains=None, **kw):
    from spikediff.runtime.run import run_windows

    net = build(dep, **kw)
    if chains is not None:
        assert net.netx_chains == chains
    return run_windows(net, inputs, record_spikes=True)


def test_lava_fixed_point_equals_the_simulator_bit_for_bit(tiny):
    model, graph = tiny
    dep = _fixed_sampler(model).loop
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([999, 500, 0])
    inputs = model.make_input(x, t).numpy()
    ref = evaluate(dep, inputs)
    # the two sequential chains run as lava-dl netx networks loaded from the HDF5 files we write
    got = _lava_eval(dep, inputs, chains=[["e0", "e1"], ["d1", "d2"]])
    np.testing.assert_array_equal(got["readout"], ref["readout"])
    for name, counts in ref["spikes"].items():
        assert counts.sum() > 0, name
        np.testing.assert_array_equal(got["spikes"][name], counts, err_msg=name)
    stats = {}
    with torch.no_grad():  # and it is still the same network: spike counts near the float model's
        model.readout_current(x, t, stats=stats)
    busy = [name for name in stats if stats[name] >= 100]  # (this untrained model's deep layers barely fire)
    assert busy
    for name in busy:
        assert abs(ref["spikes"][name].sum() - stats[name]) <= 0.1 * stats[name], name


@pytest.mark.parametrize("make,chains", [(_hand_built_graph, []), (_pooling_graph, [["a", "b", "c", "d"]]),
                                         (_dense_chain_graph, [["n2", "n4", "n6"]])])
def test_hand_built_graphs_in_fixed_point_equal_the_simulator(make, chains, tmp_path):
    made = make()
    graph, x = made if isinstance(made, tuple) else (made, np.random.default_rng(4).uniform(0, 1.5, (2, 4)))
    dep = compile_graph(graph, fixed_point=True, num_steps=5)
    ref = evaluate(dep, x)
    got = _lava_eval(dep, x, chains=chains, netx_dir=tmp_path)
    assert sorted(f.name for f in tmp_path.iterdir()) == [f"{c[0]}-{c[-1]}.net" for c in chains]
    assert np.abs(ref["readout"]).max() > 0 and sum(c.sum() for c in ref["spikes"].values()) > 0
    np.testing.assert_array_equal(got["readout"], ref["readout"])
    for name, counts in ref["spikes"].items():
        np.testing.assert_array_equal(got["spikes"][name], counts, err_msg=name)
    plain = _lava_eval(dep, x, chains=[], netx=False)  # the same without netx
    np.testing.assert_array_equal(plain["readout"], ref["readout"])


def test_lava_fixed_point_sampler_equals_the_simulator_images_and_spikes(tiny):
    from spikediff.runtime.run import sample_lava

    model, graph = tiny
    noise = initial_noise(4, (1, 8, 8), 0).numpy()
    sd = _fixed_sampler(model)
    lava = sample_lava(sd, 4, 3, noise=noise, progress=False, target="sim")
    sim = sample_sim(sd, 4, 3, noise=noise)
    np.testing.assert_array_equal(lava["images"], sim["images"])
    for name, c in sim["counters"].items():
        assert c["active"].sum() > 0
        np.testing.assert_array_equal(lava["counters"][name]["active"], c["active"], err_msg=name)
    float_images = sample_torch(model, NoiseSchedule(1000, "v_prediction"), 4, 3, noise=torch.from_numpy(noise),
                                progress=False).numpy()
    assert 0 < np.abs(sim["images"] - float_images).max() < 0.5


def test_a_large_bias_behind_small_weights_sets_the_scale(tmp_path):
    """Weights that are tiny next to a population's bias (a batch-normalised input layer can end up so) would
    push the weight scale so high that the bias overflows its 13-bit mantissa << 7: the bias caps the scale."""
    import nir

    from spikediff.export.quantize import BIAS_EXP_MAX, BIAS_MANT_MAX

    rng = np.random.default_rng(3)
    graph = _chain(_inp(5), nir.Affine(weight=rng.normal(0, 0.004, (12, 5)).astype(np.float32),
                                       bias=np.linspace(0.4, 3.1, 12).astype(np.float32)), _lif(12),
                   nir.Linear(weight=rng.normal(0, 1, (3, 12)).astype(np.float32)), _li(3), _out(3))
    dep = compile_graph(graph, fixed_point=True, num_steps=5)
    pop = dep.fixed.populations["n2"]
    assert np.abs(pop.bias_mant).max() <= BIAS_MANT_MAX and np.max(pop.bias_exp) <= BIAS_EXP_MAX
    assert dep.fixed.errors["n2"]["max_bias_error"] <= 1.0 / pop.scale  # the bias itself stays exact to a step
    x = rng.uniform(0, 1.5, (2, 5)).astype(np.float32)
    ref = evaluate(dep, x)
    assert ref["spikes"]["n2"].sum() > 0
    got = _lava_eval(dep, x, chains=[], netx=False)
    np.testing.assert_array_equal(got["readout"], ref["readout"])


def test_shipped_model_in_fixed_point_stays_close_to_float():
    from spikediff.checkpoint import load_model

    model, schedule, _ = load_model()
    noise = initial_noise(8, (1, 28, 28), 1)
    sd = compile_sampler(sampler_graphs(model, schedule), fixed_point=True)
    fixed = sample_sim(sd, 8, 10, noise=noise.numpy())["images"]
    floating = sample_torch(model, schedule, 8, 10, noise=noise, progress=False).numpy()
    # measured at 10 steps: 0.050 for the shipped U-Net on an Intel Xeon (just under 0.05 on an AMD EPYC: the
    # float32 model rounds differently on another CPU), 0.030 for mnist-patch; pixels span 2
    assert np.abs(fixed - floating).mean() < 0.08


def test_cli_fixed_point_sample_and_its_errors(tmp_path):
    out = tmp_path / "tiny"
    res = run_cli("train", "--data", "digits", "--out", out, "--steps", "3", "--channels", "4", "--hidden", "16",
                  "--batch-size", "8", "--quiet")
    assert res.returncode == 0, res.stderr
    png = tmp_path / "run" / "samples.png"  # -o names a directory, as in `sample ... -o out/`
    res = run_cli("sample", out / "model.pt", "--backend", "lava", "--fixed-point", "-n", "2", "--steps", "2",
                  "-o", f"{tmp_path / 'run'}/")
    assert res.returncode == 0, res.stderr
    assert "identical to spikediff's bit-exact simulator" in res.stdout
    report = json.loads(png.with_suffix(".counters.json").read_text())
    assert "fixed_pt" in report["backend"] and report["totals_per_image"]["spikes"] > 0
    assert report["bit_exact_vs_simulator"] is True
    res = run_cli("sample", out / "model.pt", "--fixed-point", "-n", "1", "-o", tmp_path / "t.png")
    assert res.returncode == 2 and "--fixed-point needs --backend lava" in res.stderr

    # the netx files stand on their own: lava-dl loads them into the layers they describe
    res = run_cli("export", out / "model.pt", "-o", tmp_path / "d.nir", "--netx-dir", tmp_path / "netx")
    assert res.returncode == 0, res.stderr
    files = sorted((tmp_path / "netx").iterdir())
    assert [f.name for f in files] == ["d1-d2.net", "e0-e1.net"]
    from spikediff import lava_compat

    lava_compat.import_netx()
    from lava.lib.dl.netx import hdf5

    net = hdf5.Network(net_config=str(files[1]), input_message_bits=24, input_shape=(8, 8, 9))
    assert len(net.layers) == 2 and net.out.shape == (8, 8, 4)  # e1: 4 channels of 8 x 8, Lava's (W, H, C)
