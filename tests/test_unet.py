"""The spiking U-Net: its derived convolutions equal the natural operations exactly, batch norm folds, and the
tiny preset runs on Lava spike for spike (float) and bit for bit (fixed point, against the simulator)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from spikediff import SpikediffError
from spikediff.diffusion import NoiseSchedule
from spikediff.diffusion.sampler import initial_noise, sample_torch
from spikediff.export.deployment import compile_graph, compile_sampler
from spikediff.export.nir_graph import sampler_graphs, to_nir
from spikediff.hardware_sim.sampler import sample_sim
from spikediff.models.s2d import S2DSynapse, axis_taps
from spikediff.models.spiking_graph import deployable
from spikediff.models.unet import PRESETS, SpikingUNet, UNetConfig, preset


def _ints(*shape, low=-3, high=4, seed=0):
    """Small integers as float64: every sum is exact, so 'equal' means bit for bit."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(low, high, shape, generator=g).double()


def _natural(x_nat, w, stride=1, upsample=1):
    if upsample > 1:
        x_nat = F.interpolate(x_nat, scale_factor=upsample, mode="nearest")
    return F.conv2d(x_nat, w, None, stride, w.shape[-1] // 2)


def _unshuffle(y, r):
    return F.pixel_unshuffle(y, r) if r > 1 else y


def _derived(layer, x_s2d):
    return deployable(layer)(x_s2d)


CASES = [  # (c_in, c_out, k, stride, upsample, r_in, r_out, coarse grid of the input)
    (3, 2, 3, 1, 2, 1, 2, 4),  # (a) nearest up-sampling + 3x3 from a natural low-resolution map
    (3, 2, 3, 1, 2, 2, 4, 3),  # (a') the same from a map already in s2d layout (a U-Net's second up-sampling)
    (3, 2, 3, 1, 1, 2, 2, 3),  # (b) 3x3 between two s2d maps
    (3, 2, 3, 1, 1, 4, 4, 2),  # (b') at factor 4
    (3, 2, 3, 1, 1, 1, 2, 6),  # (c) a skip: natural high resolution into an s2d map
    (3, 2, 1, 1, 1, 1, 4, 8),  # (c') a 1 x 1 skip (a shortcut or the readout) into factor 4
    (3, 2, 3, 2, 1, 1, 1, 6),  # down-sampling, natural layout (the derived conv is the natural one)
]


@pytest.mark.parametrize("c_in,c_out,k,stride,up,r_in,r_out,grid", CASES)
def test_derived_convolution_equals_the_natural_operation_exactly(c_in, c_out, k, stride, up, r_in, r_out, grid):
    layer = S2DSynapse(c_in, c_out, k, stride=stride, upsample=up, r_in=r_in, r_out=r_out, bias=False).double()
    with torch.no_grad():
        layer.weight.copy_(_ints(c_out, c_in, k, k, seed=1))
    x_nat = _ints(2, c_in, r_in * grid, r_in * grid, low=0, high=2, seed=2)  # spikes
    x = _unshuffle(x_nat, r_in)
    expected = _unshuffle(_natural(x_nat, layer.weight.detach(), stride, up), r_out)
    got = _derived(layer, x)
    assert got.shape == expected.shape and expected.abs().sum() > 0
    assert torch.equal(got, expected)
    assert torch.equal(layer(x), expected)  # the training path computes the same
    conv = deployable(layer)
    assert tuple(conv.weight.shape) == layer.derived_shape and isinstance(conv, torch.nn.Conv2d)


def test_the_brief_s_forms_of_the_derived_convolutions():
    # up-sampling + 3x3 from a low-resolution map: a 3x3 low-resolution conv with 4 C_out outputs
    assert axis_taps(1, 2, 3, upsample=2)[:3] == (1, 1, 3)
    # 3x3 between two s2d maps: a 3x3 conv on the coarse grid
    assert axis_taps(2, 2, 3)[:3] == (1, 1, 3)
    # a skip from a natural high-resolution map into an s2d map: stride 2, kernel 4, padding 1
    assert axis_taps(1, 2, 3)[:3] == (2, 1, 4)
    with pytest.raises(Exception, match="finer"):  # up-sampling into a natural map has no Conv2d form
        axis_taps(1, 1, 3, upsample=2)


def test_constant_source_and_depthwise_synapses():
    cond = S2DSynapse(3, 2, 1, r_out=4, bias=False, constant_source=True).double()
    with torch.no_grad():
        cond.weight.copy_(_ints(2, 3, 1, 1))
    planes = _ints(1, 3, 1, 1).expand(1, 3, 5, 5).contiguous()  # a spatially constant map
    expected = F.pixel_unshuffle(F.conv2d(planes.repeat_interleave(4, 2).repeat_interleave(4, 3), cond.weight), 4)
    assert torch.equal(_derived(cond, planes), expected) and torch.equal(cond(planes), expected)
    scale = S2DSynapse(3, 3, 1, r_in=2, r_out=2, bias=False, depthwise=True).double()
    with torch.no_grad():
        scale.weight.copy_(_ints(3, 1, 1, 1))
    x_nat = _ints(1, 3, 6, 6, seed=4)
    expected = F.pixel_unshuffle(x_nat * scale.weight.reshape(1, 3, 1, 1), 2)
    assert torch.equal(_derived(scale, F.pixel_unshuffle(x_nat, 2)), expected)


def test_batch_norm_folds_into_the_derived_weights_and_biases():
    layer = S2DSynapse(3, 2, 3, upsample=2, r_in=1, r_out=2, norm=True).double()
    x = _ints(16, 3, 4, 4, low=0, high=2).double()
    layer.train()
    for _ in range(5):  # running statistics away from their initial values
        layer(x)
    with torch.no_grad():
        layer.bn.weight.uniform_(0.5, 1.5)
        layer.bn.bias.uniform_(-0.5, 0.5)
    layer.eval()
    conv = deployable(layer)
    assert conv.bias is not None and conv.bias.abs().max() > 0
    torch.testing.assert_close(conv(x), layer(x), rtol=1e-12, atol=1e-12)


@pytest.fixture(scope="module")
def tiny():
    """The tiny preset with batch-norm statistics and affine parameters away from their initial values, so
    that folding them is part of what the exactness tests check."""
    torch.manual_seed(0)
    model = SpikingUNet(preset("tiny", image_size=8)).train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, 1, 8, 8), torch.randint(0, 1000, (8,)))
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.8, 1.2)
                module.bias.uniform_(-0.1, 0.1)
    return model.eval()


def test_presets_build_and_the_tiny_one_has_every_part(tiny):
    assert set(PRESETS) == {"tiny", "small", "fsddim"}
    g = tiny.graph
    assert tiny._readout_shape == (4, 4, 4) and tiny.config.patch == 2
    assert {"d1_up", "d0_out", "fa", "fb"} <= set(g)  # up-sampling, the top decoder map, the last block
    layer = tiny.d1_up_conv
    assert (layer.upsample, layer.r_in, layer.r_out) == (2, 1, 2)
    assert ("d0_0_conv1_1", "e0_0b") in g["d0_0a"]  # a skip is a synapse into the decoder block (fan-in)
    assert ("d0_0_skip_0", "d1_up") in g["d0_0b"]  # the residual: another synapse into the block's 2nd population
    assert ("d0_0_cond", "t4") in g["d0_0a"] and ("e0_0_cond", "t8") in g["e0_0a"]
    fsddim = UNetConfig(arch="fsddim", image_size=32, **PRESETS["fsddim"]).validate()
    assert fsddim.channels == 128 and fsddim.channel_mult == (1, 2, 3, 4) and fsddim.blocks == 2
    assert fsddim.num_steps == 8 and fsddim.patch == 8


def test_time_maps_are_spatially_constant_and_the_model_is_its_export(tiny):
    trains = {name: [] for name in tiny.graph if name.startswith("t")}
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([5, 400, 999])
    with torch.no_grad():
        tiny.run_graph(tiny.make_input(x, t), trains=trains)
    for name, spikes in trains.items():
        s = torch.stack(spikes)
        assert s.sum() > 0 and torch.equal(s, s[..., :1, :1].expand_as(s)), name
    # the exported graph, run by the NIR reference interpreter, is the trained network
    from spikediff.export.nir_torch import to_torch

    graph = to_nir(tiny)
    executor = to_torch(graph)
    inp = tiny.make_input(x, t)
    state, outs = None, []
    with torch.no_grad():
        for _ in range(tiny.config.num_steps):
            out, state = executor(inp, state)
            outs.append(out)
        expected = tiny.readout_current(x, t)
    assert expected.abs().max() > 0.01
    torch.testing.assert_close(torch.stack(outs).mean(0), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("compact", [False, True], ids=["dense", "compact"])
def test_lava_float_run_equals_pytorch_spike_for_spike(tiny, compact):
    """Three denoiser calls in one Lava run: delays align the skips of every depth, resets separate the calls.
    Compact: the derived kernels held and run as their natural ones (how the paper's width fits in memory)."""
    from spikediff.runtime.build import build
    from spikediff.runtime.run import run_windows

    dep = compile_graph(to_nir(tiny, compact=compact), num_steps=tiny.config.num_steps)
    assert sum(f.conv is not None and f.conv.compact for f in dep.folded.synapses) == (16 if compact else 0)
    net = build(dep)
    x, t = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1)), torch.tensor([999, 500, 20])
    result = run_windows(net, tiny.make_input(x, t).numpy(), record_spikes=True)
    per_call = []
    for i in range(len(x)):
        stats = {}
        with torch.no_grad():
            expected = tiny.readout_current(x[i:i + 1], t[i:i + 1], stats=stats)[0].numpy()
        per_call.append(stats)
        np.testing.assert_allclose(result["readout"][i].mean(0).reshape(-1), expected, rtol=0, atol=1e-5)
    for name in tiny.spiking_layers:
        counts = [s[name] for s in per_call]
        assert sum(counts) > 0, name
        np.testing.assert_array_equal(result["spikes"][name].sum(1), counts, err_msg=name)


def _assert_same_run(sim_a, sim_b, plan, n: int, seed: int) -> None:
    """Two fixed-point simulators of one network give the same readout integers and spikes on random inputs."""
    rng = np.random.default_rng(seed)
    inputs = {k: rng.standard_normal((n, *shape)) for k, shape in plan.inputs.items()}
    a, b = sim_a.evaluate(inputs), sim_b.evaluate(inputs)
    assert torch.equal(a["readout_int"], b["readout_int"]) and a["readout_int"].abs().sum() > 0
    for name in a["neuron_spikes"]:
        assert torch.equal(a["neuron_spikes"][name], b["neuron_spikes"][name]), name


def test_compact_graph_means_the_dense_one(tiny, tmp_path):
    """A compact graph's kernels are the natural ones, yet ask for the array and get fused()'s exactly; it
    compiles to the same folded synapses (the dense kernel's up-sampling taps were summed in float32, the compact
    one's in float64), computes the same currents, and its NIR file is the dense graph's. In fixed point it
    compiles to merged taps (``MergedKernel``) with the dense graph's integers, errors and digest, and the
    simulator runs them to the same spikes."""
    import nir

    from spikediff.export.nir_graph import read_graph, write_nir
    from spikediff.models.s2d import DerivedKernel

    dense, compact = to_nir(tiny), to_nir(tiny, compact=True)
    held = {k: n.weight for k, n in compact.nodes.items() if isinstance(getattr(n, "weight", None), DerivedKernel)}
    assert held and all(k in dense.nodes and "s2d" in dense.nodes[k].metadata for k in held)
    for k, kernel in held.items():
        assert kernel.shape == dense.nodes[k].weight.shape and kernel.natural.size < kernel.size
        np.testing.assert_array_equal(np.asarray(kernel), dense.nodes[k].weight, err_msg=k)
    from spikediff.export.fold import synaptic_input

    a, b = compile_graph(dense), compile_graph(compact)
    gen = torch.Generator().manual_seed(0)
    for fa, fb in zip(a.folded.synapses, b.folded.synapses, strict=True):
        assert fa.syn.name == fb.syn.name and fb.op.out_shape(fb.src_shape) == fa.op.out_shape(fa.src_shape)
        np.testing.assert_allclose(np.asarray(fb.weight), fa.weight, rtol=2e-6, atol=1e-9, err_msg=fa.syn.name)
        if fb.conv is not None and fb.conv.compact:  # run the natural way, the same currents
            x = torch.randint(0, 2, (2, *fa.src_shape), generator=gen).double().numpy()
            np.testing.assert_allclose(synaptic_input(fb, x), synaptic_input(fa, x), rtol=0, atol=1e-6)
    # fixed point: from a compact graph, the merged taps of each derived kernel into a spiking population
    # (quantized without ever being dense), the dense kernel into the readout; the same integers either way
    from spikediff.export.natural_conv import MergedConv
    from spikediff.export.simulator import Simulator
    from spikediff.models.s2d import MergedKernel

    qa, qb = compile_graph(dense, fixed_point=True), compile_graph(compact, fixed_point=True)
    merged = {f.syn.name for f in qb.folded.synapses if isinstance(qb.fixed.weights[f.syn.name], MergedKernel)}
    spiking = {f.syn.name for f in qb.folded.synapses if f.conv is not None and f.syn.name in held
               and qb.plan.populations[f.syn.dst].spiking}
    assert merged == spiking and len(merged) >= 4
    assert any(qb.fixed.weights[k].values.shape[2] == 2 for k in merged)  # up-sampling taps merged, then rounded
    for k, w in qa.fixed.weights.items():
        np.testing.assert_array_equal(np.asarray(qb.fixed.weights[k]), w, err_msg=k)
        assert qb.fixed.errors[k] == pytest.approx(qa.fixed.errors[k], rel=1e-9), k
    assert qa.fixed.digest() == qb.fixed.digest()
    sa, sb = Simulator(qa), Simulator(qb)
    assert {k for k, form in sb.natural.items() if isinstance(form, MergedConv)} == merged
    _assert_same_run(sa, sb, qa.plan, 3, seed=1)
    # a compact kernel must be of the geometry its node's metadata names
    name, other = next((a, b) for a in held for b in held if held[a].geometry != held[b].geometry)
    compact.nodes[name].metadata = {"s2d": held[other].geometry.to_metadata()}
    with pytest.raises(SpikediffError, match=f"{name}.*not the geometry its compact kernel"):
        compile_graph(compact)
    compact.nodes[name].metadata = dense.nodes[name].metadata
    write_nir(compact, tmp_path / "compact.nir")
    again = read_graph(tmp_path / "compact.nir")
    for k in held:
        np.testing.assert_array_equal(again.nodes[k].weight, dense.nodes[k].weight)
    assert isinstance(compact.nodes[next(iter(held))], nir.Conv2d)


def test_cli_samples_a_unet_on_lava_in_compact_form(tmp_path):
    """`spikediff sample CKPT --backend lava` compiles a U-Net checkpoint's derived kernels in compact form: float
    Lava draws the float model's images; fixed point is checked against the simulator as for every model."""
    from conftest import run_main
    from PIL import Image

    out = tmp_path / "run"
    res = run_main("train", "--arch", "tiny", "--data", "digits", "--steps", "2", "--batch-size", "4", "--out", out,
                   "--quiet", timeout=300)
    assert res.returncode == 0, res.stderr
    pngs = {b: tmp_path / f"{b}.png" for b in ("lava", "torch", "fixed")}
    res = run_main("sample", out / "model.pt", "--backend", "lava", "-n", "2", "--steps", "2", "-o", pngs["lava"],
                   "--quiet", timeout=600)
    assert res.returncode == 0, res.stderr
    res = run_main("sample", out / "model.pt", "-n", "2", "--steps", "2", "-o", pngs["torch"], "--quiet", timeout=300)
    assert res.returncode == 0, res.stderr
    lava, torch_ = (np.asarray(Image.open(pngs[b]), dtype=np.int64) for b in ("lava", "torch"))
    assert np.abs(lava - torch_).max() <= 1  # float64 against float32: a pixel may round apart
    res = run_main("sample", out / "model.pt", "--backend", "lava", "--fixed-point", "-n", "2", "--steps", "2",
                   "-o", pngs["fixed"], "--quiet", timeout=600)
    assert res.returncode == 0, res.stderr
    assert json.loads(pngs["fixed"].with_suffix(".counters.json").read_text())["bit_exact_vs_simulator"] is True


def test_lava_fixed_point_sampler_equals_the_simulator_images_and_spikes(tiny):
    from spikediff.runtime.run import sample_lava

    schedule = NoiseSchedule(1000, "v_prediction")
    noise = initial_noise(3, (1, 8, 8), 0).numpy()
    sd = compile_sampler(sampler_graphs(tiny, schedule), fixed_point=True)
    assert sd.kind.name == "fsddim" and sd.metas["denoiser"]["patch"] == 2
    lava = sample_lava(sd, 3, 2, noise=noise, progress=False, target="sim")
    sim = sample_sim(sd, 3, 2, noise=noise)
    np.testing.assert_array_equal(lava["images"], sim["images"])
    for name, c in sim["counters"].items():
        assert c["active"].sum() > 0, name
        np.testing.assert_array_equal(lava["counters"][name]["active"], c["active"], err_msg=name)
    floating = sample_torch(tiny, schedule, 3, 2, noise=torch.from_numpy(noise), progress=False).numpy()
    assert 0 < np.abs(sim["images"] - floating).max() < 0.5


def test_the_ann_twin_counts_the_natural_network_not_the_derived_kernels_zeros(tiny):
    """The report's ANN twin is the U-Net as a ReLU network: its MACs are its weights' connections, so the
    structural zeros of a derived space-to-depth kernel (most of it at r > 1) are no MACs of it."""
    from spikediff.hardware_sim.events import count_events

    sd = compile_sampler(sampler_graphs(tiny, NoiseSchedule(1000, "v_prediction")), fixed_point=True)
    ev = count_events(sample_sim(sd, 1, 1)["parts"]["denoiser"])
    twin = sum(ev.ann_macs_per_evaluation.values())
    dense = sum(int(np.prod(f.weight.shape)) * (int(np.prod(f.op.out_shape(f.src_shape)[1:])) if f.conv else 1)
                for f in sd.loop.folded.synapses)  # every entry of every kernel at every position
    # at most the natural layers' taps at every position (borders not excluded), far below the dense count
    assert 0 < twin <= tiny.sizes()["synapses"] and twin < 0.5 * dense


@pytest.mark.parametrize("c_in,c_out,k,stride,up,r_in,r_out,grid", CASES)
def test_the_simulator_s_natural_form_of_a_derived_kernel_is_exact(c_in, c_out, k, stride, up, r_in, r_out, grid):
    """``natural_conv``: the natural integer kernel read back out of a derived one gives, through shuffle,
    up-sampling, convolution and unshuffle, the derived convolution to the bit; where an up-sampling merges
    taps, only if the derived kernel is the derivation of some integer natural kernel. Every derived kernel,
    merged taps rounded apart included, runs phase by phase to the bit; a weight where the form has a zero
    leaves both forms to the dense convolution."""
    from spikediff.export.natural_conv import NaturalConv, S2DGeometry, natural_kernel, phase_split

    layer = S2DSynapse(c_in, c_out, k, stride=stride, upsample=up, r_in=r_in, r_out=r_out, bias=False).double()
    with torch.no_grad():
        layer.weight.copy_(_ints(c_out, c_in, k, k, seed=3))
    derived = deployable(layer)
    w = derived.weight.detach().numpy()
    geometry = S2DGeometry(r_in, r_out, k, stride, up)
    assert geometry.mismatch(w.shape, derived.stride, derived.padding, derived.dilation, derived.groups) == ""
    natural, trained = natural_kernel(w, geometry), layer.weight.detach().numpy().copy()
    x = _ints(3, c_in * r_in ** 2, grid, grid, low=0, high=2, seed=4)
    with torch.no_grad():
        layer.weight.fill_(1.0)
    structural = deployable(layer).weight.detach().numpy() == 0  # zeros of the form, whatever the weights
    # the derived kernel as quantization leaves it: every weight the form allows rounded on its own
    rounded = np.where(structural, 0, w + _ints(*w.shape, low=-1, high=2, seed=5).numpy())

    def dense(kernel):
        return F.conv2d(x, torch.as_tensor(kernel), None, derived.stride, derived.padding)

    for kernel in (w, rounded):
        split = phase_split(kernel, geometry, derived.stride, derived.padding)
        assert split is not None and torch.equal(split(x), dense(kernel)) and dense(kernel).abs().sum() > 0
    merged = up > 1 and k > 1  # some tap never lands alone: read out by difference, or not at all
    if merged:
        assert natural is None and natural_kernel(rounded, geometry) is None
        assert sum(p[-1].numel() for p in split.parts) < w.size  # fewer products per position than dense
    else:
        np.testing.assert_array_equal(natural, trained)
        assert torch.equal(NaturalConv(torch.as_tensor(natural), geometry)(x), derived(x))
    if structural.any():  # a weight where the form has a zero: no natural kernel derives it, no split holds it
        w_bad = w.copy()
        w_bad[np.unravel_index(np.argmax(structural), w.shape)] = 1
        assert natural_kernel(w_bad, geometry) is None
        assert phase_split(w_bad, geometry, derived.stride, derived.padding) is None


@pytest.mark.parametrize("c_in,c_out,k,stride,up,r_in,r_out,grid", CASES + [(3, 2, 3, 2, 1, 4, 2, 2)])
def test_merged_taps_are_the_dense_derived_kernel_bit_for_bit(c_in, c_out, k, stride, up, r_in, r_out, grid):
    """``MergedKernel``: float32 natural weights of very different sizes merge into taps whose dense array is the
    exporter's kernel to the bit (so the integers are the same); quantized tap by tap they are the dense kernel
    quantized; ``MergedConv`` on the natural maps gives the dense convolution's integers exactly; the statistics
    quantization needs (largest weight, per-channel sums, sums over every dense weight) are the dense kernel's."""
    from spikediff.export.natural_conv import MergedConv
    from spikediff.export.quantize import quantize_weights, weight_error
    from spikediff.models.s2d import DerivedKernel, S2DGeometry

    g = S2DGeometry(r_in, r_out, k, stride, up)
    rng = np.random.default_rng(k + 10 * r_out + up)
    w = (rng.standard_normal((c_out, c_in, k, k)) * 10.0 ** rng.integers(-4, 3, (c_out, c_in, k, k)))
    kernel = DerivedKernel(w.astype(np.float32), g)
    merged = kernel.merged()
    dense = np.asarray(kernel)
    assert merged.shape == dense.shape and np.array_equal(np.asarray(merged), dense)
    assert merged.values.size <= dense.size and (merged.values.size < dense.size or r_in == 1)
    assert merged.abs_max() == np.abs(dense).max()
    np.testing.assert_allclose(merged.per_channel(np.abs(merged.values.astype(np.float64))),
                               np.abs(dense.astype(np.float64)).reshape(len(dense), -1).sum(1), rtol=1e-12)
    assert merged.dense_sum(merged.values.astype(np.float64) ** 2) == pytest.approx(
        (dense.astype(np.float64) ** 2).sum(), rel=1e-12)
    scale = 254 / np.abs(dense).max()
    ints = quantize_weights(merged, scale)
    assert np.array_equal(np.asarray(ints), quantize_weights(dense, scale)) and ints.abs_max() > 0
    assert weight_error(merged, ints, scale) == pytest.approx(
        weight_error(dense.astype(np.float64), np.asarray(ints), scale), rel=1e-9)
    x = _ints(3, c_in * r_in ** 2, grid, grid, low=0, high=2, seed=4)
    s_, pad, _ = g.derived_conv()
    want = F.conv2d(x, torch.as_tensor(np.asarray(ints), dtype=torch.float64), None, s_, pad)
    assert torch.equal(MergedConv.of(ints)(x), want) and want.abs().sum() > 0
    t = _ints(*want.shape, low=0, high=3, seed=6)  # the transposed operation: the dense input gradient
    back = torch.nn.grad.conv2d_input(x.shape, torch.as_tensor(np.asarray(ints), dtype=torch.float64), t, s_, pad)
    assert torch.equal(MergedConv.of(ints).transpose(t, x.shape[1:]), back) and back.abs().sum() > 0
    factors = np.repeat(rng.uniform(0.5, 2.0, c_out), r_out ** 2)  # one gain per natural channel stays merged
    assert np.array_equal(np.asarray(merged.scaled(factors)), dense * factors.reshape(-1, 1, 1, 1))
    # the mapper's rows per set of output channels: runs (from running sums), scattered and repeated sets
    pattern, pattern_dense = merged.map(lambda v: (v != 0).astype(np.float64)), (dense != 0).astype(np.float64)
    for channels in (np.arange(len(dense)), np.arange(1, len(dense)), np.array([len(dense) - 1]),
                     np.sort(rng.choice(len(dense), max(1, len(dense) // 2), replace=False)), np.array([0, 0, 1])):
        assert np.array_equal(pattern.row_counts(channels), pattern_dense[channels].sum(0).reshape(-1))


def test_the_simulator_runs_derived_kernels_in_natural_form_bit_for_bit(tiny, tmp_path):
    """The exporter marks each derived Conv2d with its geometry (kept in the NIR file); the fixed-point simulator
    runs those in natural form, with the same integers out as the dense convolutions; a geometry that does not
    describe its node is refused in one line that names it."""
    import nir

    from spikediff.export.nir_graph import write_nir
    from spikediff.export.plan import NirGraphError
    from spikediff.export.simulator import Simulator

    graph = to_nir(tiny, NoiseSchedule(1000, "v_prediction"))
    marked = {n for n, node in graph.nodes.items() if (node.metadata or {}).get("s2d")}
    assert marked and all(isinstance(graph.nodes[n], nir.Conv2d) for n in marked)
    write_nir(graph, tmp_path / "g.nir")
    back = nir.read(str(tmp_path / "g.nir"))
    assert {n for n, node in back.nodes.items() if (node.metadata or {}).get("s2d")} == marked
    dep = compile_graph(back, fixed_point=True)
    sim = Simulator(dep)
    assert set(sim.natural) and set(sim.natural) <= {f.syn.name for f in dep.folded.synapses}
    from spikediff.export.natural_conv import NaturalConv, PhaseSplitConv

    forms = {type(form) for form in sim.natural.values()}
    assert forms == {NaturalConv, PhaseSplitConv}  # the up-sampling synapses phase by phase, no derived one dense
    assert len(sim.natural) == sum(f.conv is not None and f.conv.s2d is not None for f in dep.folded.synapses)
    dense = Simulator(dep, natural=False)
    assert not dense.natural
    _assert_same_run(sim, dense, dep.plan, 4, seed=0)
    name = next(n for n in sorted(marked) if back.nodes[n].metadata["s2d"]["kernel"] == 3)
    good = dict(back.nodes[name].metadata["s2d"])
    for bad in ({"r_in": 3}, {"kernel": 1}, {"stride": "2"}, {"upsample": np.array([1, 2])}, {"r_out": 1.5}):
        back.nodes[name].metadata["s2d"] = {**good, **bad}
        with pytest.raises(NirGraphError, match=f"NIR node '{name}': its s2d metadata"):
            compile_graph(back, fixed_point=True)


def test_a_compact_sampler_is_priced_as_the_dense_one(tiny, monkeypatch):
    """Events, synaptic ops, the ANN twin, the core mapping and the energy of a sampler compiled from compact
    kernels (merged taps in fixed point, never made dense by the cost model) are the dense compile's."""
    from spikediff.hardware_sim import connectivity
    from spikediff.hardware_sim.connectivity import Connectivity

    monkeypatch.setattr(connectivity, "BATCH", 2)  # cores asked a few at a time, as at the paper's width
    from spikediff.hardware_sim.profiles import load_profile
    from spikediff.hardware_sim.report import price_networks

    schedule = NoiseSchedule(1000, "v_prediction")
    dense = compile_sampler(sampler_graphs(tiny, schedule), fixed_point=True)
    compact = compile_sampler(sampler_graphs(tiny, schedule, compact=True), fixed_point=True)
    assert dense.digest() == compact.digest()
    conn = Connectivity(compact.loop.folded, compact.loop.fixed)
    assert len(conn.merged) >= 4 and not set(conn.merged) & set(conn.masks)
    rng = np.random.default_rng(0)
    for sd in (dense, compact):  # senders through a few channels = the pull through the whole kernel
        c = Connectivity(sd.loop.folded, sd.loop.fixed)
        for f in sd.loop.folded.synapses:
            if f.conv is None:
                continue
            size = c.size(f.syn.dst)
            for idx in (np.arange(3, min(size, 40)), rng.choice(size, 5, replace=False)):
                mask = np.zeros(size)
                mask[idx] = 1
                np.testing.assert_array_equal(c.senders(f, idx), c.pull(f, mask) > 0, err_msg=f.syn.name)
            # per core, through the core's own channels: what each core of either side pulls or pushes alone
            for side, ask, whole in ((f.syn.dst, c.feeds, c.pull), (f.syn.src, c.reaches, c.deliver)):
                size = c.size(side)
                owner = np.minimum(np.arange(size) // 37, 5)  # runs across channel borders, a long last one
                owner[rng.choice(size, size // 10, replace=False)] = 6  # and one core of scattered neurons
                # cores of whole columns (every channel at their positions) and of half the channels at theirs
                shape = c.out_shapes[f.syn.name] if ask == c.feeds else c.plan.shapes[side]
                grid = np.arange(size).reshape(shape)
                left = grid[:, :, : shape[2] // 2]
                owner[left.reshape(-1)] = 7 + np.broadcast_to(left[0] % 3, left.shape).reshape(-1)
                owner[grid[: shape[0] // 2, :, shape[2] // 2:].reshape(-1)] = 10
                cores = np.unique(owner)
                if ask == c.feeds:
                    got = dict(ask(f, owner, cores))
                    assert sorted(got) == list(cores)
                else:
                    got = dict(zip(cores, ask(f, owner, cores).T, strict=True))
                for core in cores:
                    np.testing.assert_array_equal(got[core], whole(f, (owner == core).astype(float)) > 0,
                                                  err_msg=f"{f.syn.name} {ask.__name__}")
    profiles = [load_profile(name) for name in ("loihi2", "loihi1")]
    profiles[0] = profiles[0].with_overrides({"max_neurons_per_core": 32})  # several cores per map
    priced = [price_networks(sample_sim(sd, 2, 2)["parts"], profiles) for sd in (dense, compact)]
    (ev_a, costs_a, maps_a), (ev_b, costs_b, maps_b) = priced
    assert ev_a["denoiser"].to_dict() == ev_b["denoiser"].to_dict()
    assert costs_a == costs_b and maps_a == maps_b
    assert maps_a["denoiser"]["loihi2"]["cores"] > len(compact.loop.plan.populations)


def test_the_mapper_places_space_to_depth_maps_by_their_natural_columns(tiny, monkeypatch):
    """A map held in space-to-depth layout is taken by the natural map's columns (fine x, then fine y, then
    channels), so a core holds neighbouring fine positions; by its coarse columns (every phase of every channel
    of a coarse position on one core) its cores would reach more cores of the next map: more routing entries."""
    from spikediff.hardware_sim import mapping
    from spikediff.hardware_sim.connectivity import Connectivity
    from spikediff.hardware_sim.profiles import load_profile

    dep = compile_graph(to_nir(tiny, NoiseSchedule(1000, "v_prediction")), fixed_point=True)
    conn = Connectivity(dep.folded, dep.fixed)
    prof = load_profile("loihi2").with_overrides({"max_neurons_per_core": 16})  # several cores per map
    factors = {k: r for k, r in mapping.s2d_factors(dep.folded).items() if r > 1 and len(dep.plan.shapes[k]) == 3}
    assert factors
    natural = mapping.map_to_cores(dep.folded, conn, prof)
    for name, r in factors.items():
        c2, h, w = dep.plan.shapes[name]
        ind = np.indices((c2 // r ** 2, r, r, h, w)).reshape(5, -1)  # NIR order: channel c r^2 + py r + px
        fine_x = ind[4] * r + ind[2]
        owner = natural.core_of[name]
        assert len(np.unique(owner)) > 1, name
        for core in np.unique(owner):
            xs = np.unique(fine_x[owner == core])
            assert xs[-1] - xs[0] + 1 == len(xs), (name, core)  # neighbouring fine columns
        order = mapping.neuron_order((c2, h, w), s2d=r)
        assert np.all(np.diff(owner[order]) >= 0)
    monkeypatch.setattr(mapping, "s2d_factors", lambda _folded: {})
    coarse = mapping.map_to_cores(dep.folded, conn, prof)
    entries = [sum(c.fan_out_axons for c in m.cores) for m in (natural, coarse)]
    assert entries[0] < entries[1], entries
    with pytest.raises(SpikediffError, match="cannot be in space-to-depth layout at factor 2"):
        mapping.neuron_order((3, 4, 4), s2d=2)


def test_the_mapper_reuses_cuts_and_routes_only_where_they_are_what_it_would_compute(tiny, monkeypatch):
    """The mapper's shortcuts change no mapping: the cost's lower bound, which refuses a run without convolutions,
    is never above the exact cost; and cuts and routes kept across re-split attempts and across the least-energy
    budgets give the mappings that cutting everything afresh gives, on both chips' rules."""
    from spikediff.hardware_sim import mapping
    from spikediff.hardware_sim.connectivity import Connectivity
    from spikediff.hardware_sim.profiles import load_profile

    sd = compile_sampler(sampler_graphs(tiny, NoiseSchedule(1000, "v_prediction"), compact=True), fixed_point=True)
    folded = sd.loop.folded
    conn = Connectivity(folded, sd.loop.fixed)
    rng = np.random.default_rng(0)
    work = {name: rng.random(conn.size(name)) for name in folded.plan.populations}
    # small cores, bound by each of synaptic memory, fan-in and fan-out axons (Loihi 1), core memory and routing
    # tables (Loihi 2)
    profiles = [load_profile("loihi1").with_overrides({"max_neurons_per_core": 64, "synaptic_memory_per_core": 1000,
                                                       "max_fan_in_axons_per_core": 150,
                                                       "max_fan_out_axons_per_core": 200}),
                load_profile("loihi2").with_overrides({"max_neurons_per_core": 64, "memory_per_core": 3000})]
    for prof in profiles:
        rules = mapping.Rules(prof)
        for name in folded.plan.populations:
            order = mapping.neuron_order(folded.plan.shapes[name], None, mapping.s2d_factors(folded).get(name, 1))
            cost = mapping._PopulationCost(folded, conn, name, rules, {}, order)
            for start, stop in rng.integers(0, len(order), (20, 2)):
                idx = order[min(start, stop):max(start, stop) + 1]
                low, exact = cost._cost(idx, cost._run(idx), exact=False), cost(idx)
                assert low["memory_bytes"] <= exact["memory_bytes"], (prof.name, name)
                assert low["fan_in_axons"] <= exact["fan_in_axons"], (prof.name, name)
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from core_mapper import described, without_shortcuts  # what benchmarks/core_mapper.py times and compares

    def mappings():
        out = []
        for prof in profiles:
            few = mapping.map_to_cores(folded, conn, prof)
            minimum = {name: sum(c.population == name for c in few.cores) for name in work}
            totals = {name: float(w.sum()) for name, w in work.items()}
            kept: dict = {}
            for extra in (0, 7, 19):
                cores = mapping.allocate(totals, minimum, {n: conn.size(n) for n in work}, len(few.cores) + extra)
                out.append(described(mapping.map_to_cores(folded, conn, prof, "balanced", cores, work, kept)))
            out.append(described(few))
            limits.update(few.limits.values())
        return out

    limits: set = set()

    attempts = []
    map_once = mapping._map_once
    monkeypatch.setattr(mapping, "_map_once", lambda *a: attempts.append(1) or map_once(*a))
    reused = mappings()
    assert len(attempts) > 8  # routing limits re-split populations: attempts after the first reuse cuts
    assert {"synaptic memory", "fan-in axons", "fan-out axons", "core memory", "routing tables"} <= limits
    with without_shortcuts():  # every run priced exactly, every cut and route asked afresh
        assert mappings() == reused
