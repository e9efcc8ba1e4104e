"""Lateral-selection spiking diffusion (spikediff/models/lateral.py): the lateral dynamics over the T steps,
the spiking AND gate, the plasticity identity, and the network on Lava against PyTorch and the simulator."""

import nir
import numpy as np
import pytest
import torch
from conftest import run_cli

from spikediff import SpikediffError
from spikediff.diffusion import NoiseSchedule
from spikediff.diffusion.sampler import initial_noise, sample_torch
from spikediff.export.nir_graph import to_nir
from spikediff.models import DenoiserConfig, SpikingDenoiser
from spikediff.models.lateral import GATE, causal_pairs, local_objective

TINY = dict(image_size=8, channels=4, hidden=16)


def _model(lateral=True, selection=True, seed=0, **kw):
    torch.manual_seed(seed)
    model = SpikingDenoiser(DenoiserConfig(**TINY, lateral=lateral, selection=selection, **kw)).double()
    with torch.no_grad():  # trained recurrent weights are not zero: give the loops something to carry
        for name in ("lateral", "sel_rec"):
            if hasattr(model, name):
                getattr(model, name).weight.normal_(0, 0.6)
    return model.eval()


def _inputs(model, n=3):
    x = torch.randn(n, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    return model.make_input(x, torch.tensor([10, 500, 990][:n]))


def test_lateral_input_comes_from_the_previous_step_and_starts_at_zero():
    model = _model(selection=False)
    inp = _inputs(model)
    trains = {"d2": [], "u": []}
    with torch.no_grad():
        model.run_graph(inp, trains=trains)
        beta, thr = model.config.beta, model.config.threshold
        v, prev = 0.0, None
        for t, d2 in enumerate(trains["d2"]):  # u's LIF written out: feedforward drive + W s_u(t - 1)
            drive = model.conv_u(d2.double()) + (model.lateral(prev) if prev is not None else 0)
            v = beta * v + drive
            spikes = (v > thr).double()
            v = v * (1 - spikes)
            np.testing.assert_array_equal(spikes.numpy(), trains["u"][t].numpy(), err_msg=f"step {t}")
            prev = spikes
    assert sum(float(s.sum()) for s in trains["u"]) > 0
    # the lateral synapse matters from the second step on, never at the first
    base = _model(lateral=False, selection=False)
    base.load_state_dict({k: v for k, v in model.state_dict().items() if k != "lateral.weight"})
    base_trains = {"u": []}
    with torch.no_grad():
        base.run_graph(inp, trains=base_trains)
    np.testing.assert_array_equal(base_trains["u"][0].numpy(), trains["u"][0].numpy())
    assert any((a != b).any() for a, b in zip(base_trains["u"][1:], trains["u"][1:]))
    # with W = 0 the lateral model is the base model
    with torch.no_grad():
        model.lateral.weight.zero_()
        np.testing.assert_array_equal(model.run_graph(inp).numpy(), base.run_graph(inp).numpy())


def test_the_gate_is_an_and_of_u_and_its_groups_selection_and_the_selection_is_refined_over_steps():
    model = _model(groups=2)
    trains = {"u": [], "sel": [], "ug": [], "m": []}
    with torch.no_grad():
        model.run_graph(_inputs(model), trains=trains)
    per_group = model.gate_u.weight.shape[0] // 2
    for u, sel, ug in zip(trains["u"], trains["sel"], trains["ug"]):
        selected = sel.repeat_interleave(per_group, dim=1)
        np.testing.assert_array_equal(ug.numpy(), (u * selected).numpy())
    assert sum(float(s.sum()) for s in trains["ug"]) > 0
    # the selection changes from step to step (its recurrence and the lateral mapping m refine it)
    sel = torch.stack(trains["sel"])
    assert (sel[1:] != sel[:-1]).any() and sum(float(s.sum()) for s in trains["m"]) > 0
    assert float(model.gate_u.weight.unique()) == GATE and not model.gate_sel.weight.requires_grad
    assert model.depths()["readout"] == 9  # u 5, m 6, sel 7, ug 8


def test_local_objective_gradient_is_the_causal_spike_timing_product():
    model = _model(selection=False)
    trains = {"u": []}
    with torch.no_grad():
        model.run_graph(_inputs(model), trains=trains)
    weight = model.lateral.weight.detach().clone().requires_grad_(True)
    decay = 0.3
    (grad,) = torch.autograd.grad(local_objective(trains["u"], weight, decay), weight)
    pairs = causal_pairs(trains["u"])
    # -dl/dW = (pre at t-1) x (post at t) - decay W: the plasticity rule, from the objective
    np.testing.assert_allclose(-grad[:, :, 0, 0].numpy(), (pairs - decay * weight[:, :, 0, 0]).detach().numpy(),
                               rtol=0, atol=1e-12)
    # the product counted by hand: post-synaptic neuron i at step t, pre-synaptic j at step t - 1
    s = torch.stack(trains["u"]).numpy()  # (T, N, C, H, W)
    terms = (s.shape[0] - 1) * s.shape[1] * s.shape[2] * s.shape[3] * s.shape[4]  # post-synaptic neuron-steps
    for i, j in [(0, 0), (1, 5), (7, 2)]:
        count = sum((s[t, :, i] * s[t - 1, :, j]).sum() for t in range(1, len(s)))
        assert float(pairs[i, j]) == pytest.approx(float(count) / terms)
    assert float(pairs.sum()) > 0 and not torch.allclose(pairs, pairs.T)  # causal, so not symmetric


def test_training_adds_the_local_objective():
    model = _model(selection=False).train()
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    model(x, torch.full((4,), 300))
    assert model.local_loss is not None and model.local_loss.requires_grad
    model.local_loss.backward()
    assert model.lateral.weight.grad.abs().sum() > 0 and model.conv_u.weight.grad is None  # local: W only


def test_bad_groups_are_named():
    with pytest.raises(SpikediffError, match="groups=3 must divide"):
        DenoiserConfig(**TINY, selection=True, groups=3).validate()


def test_lateral_selection_sampler_on_lava_equals_pytorch_and_the_simulator():
    """Float Lava = PyTorch image for image and spike for spike; fixed-point Lava = the bit-exact simulator.
    Four images pipelined (period T + 1) through two recurrent populations cleared between evaluations."""
    from spikediff.export.deployment import compile_sampler
    from spikediff.export.nir_graph import sampler_graphs
    from spikediff.hardware_sim.sampler import sample_sim
    from spikediff.runtime.build import build
    from spikediff.runtime.lava_processes import LIFClear
    from spikediff.runtime.run import sample_lava

    model = _model()
    schedule = NoiseSchedule(1000, "v_prediction")
    graph = to_nir(model, schedule)
    assert ("u", "lateral") in graph.edges and ("lateral", "u") in graph.edges and ("sel_rec", "sel") in graph.edges
    sd = compile_sampler(sampler_graphs(model, schedule))
    net = build(sd.loop)
    assert net.period == model.config.num_steps + 1
    assert isinstance(net.processes["u"], LIFClear) and isinstance(net.processes["sel"], LIFClear)
    noise = initial_noise(4, (1, 8, 8), 0)
    result = sample_lava(sd, 4, 3, noise=noise.numpy(), progress=False)
    for i in range(len(noise)):
        stats = {}
        expected = sample_torch(model, schedule, 1, 3, noise=noise[i:i + 1].double(), progress=False, stats=stats)
        np.testing.assert_allclose(result["images"][i], expected[0].numpy(), rtol=0, atol=1e-6)
        for name in ("u", "m", "sel", "ug"):
            assert result["counters"][name]["active"].sum(1)[i] == stats[name], name
    sd = compile_sampler(sampler_graphs(model, schedule), fixed_point=True)
    fixed = sample_lava(sd, 4, 3, noise=noise.numpy(), progress=False)
    sim = sample_sim(sd, 4, 3, noise=noise.numpy())
    np.testing.assert_array_equal(fixed["images"], sim["images"])
    for name in ("u", "m", "sel", "ug"):
        np.testing.assert_array_equal(fixed["counters"][name]["active"], sim["counters"][name]["active"])


def test_cli_trains_exports_and_reports_a_lateral_selection_model(tmp_path):
    out = tmp_path / "run"
    res = run_cli("train", "--data", "digits", "--out", out, "--steps", "3", "--channels", "4", "--hidden", "16",
                  "--batch-size", "8", "--lateral", "--selection", "--groups", "2", "--quiet")
    assert res.returncode == 0, res.stderr
    res = run_cli("export", out / "model.pt", "-o", tmp_path / "lat.nir")
    assert res.returncode == 0, res.stderr
    graph = nir.read(tmp_path / "lat.nir")
    assert {"lateral", "sel_rec", "lat_map", "gate_u", "gate_sel"} <= set(graph.nodes)
    res = run_cli("report", out / "model.pt", "-n", "2", "--steps", "2", "-o", tmp_path / "report")
    assert res.returncode == 0, res.stderr
    bad = run_cli("train", "--model", "spiking-vq", "--lateral", "--data", "digits", "--out", tmp_path / "x")
    assert bad.returncode == 2 and "--lateral and --selection extend the fsddim denoiser" in bad.stderr
