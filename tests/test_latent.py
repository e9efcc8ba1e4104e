"""The latent spiking DDIM (``latent-ddim``): its denoiser and decoder on Lava against PyTorch (float) and the
bit-exact simulator (fixed point), batch norm folded at export, quantization-aware training's grid, training."""

import copy
import json

import numpy as np
import pytest
import torch
from conftest import run_main

from spikediff.diffusion import NoiseSchedule, kinds
from spikediff.diffusion.sampler import initial_noise
from spikediff.export.deployment import compile_sampler
from spikediff.export.nir_graph import sampler_graphs
from spikediff.hardware_sim.sampler import same_as_lava, sample_sim
from spikediff.models import SpikingVQVAE, VQConfig
from spikediff.models.latent_ddim import LatentDDIM
from spikediff.models.latent_denoiser import LatentDenoiserConfig, SpikingLatentDenoiser
from spikediff.runtime.run import sample_lava

SCHEDULE = NoiseSchedule(1000, "v_prediction")


def _tiny(snap: bool = False) -> LatentDDIM:
    """A tiny latent sampler whose layers fire (untrained), batch norm with statistics of its own."""
    torch.manual_seed(0)
    vq = SpikingVQVAE(VQConfig(image_size=8, channels=4, codebook_size=6, code_dim=3))
    torch.nn.init.normal_(vq.quantizer.codebook.weight)
    torch.nn.init.normal_(vq.decoder.gen.weight, 0, 1.5)  # the decoder's first layer fires on unit latents
    den = SpikingLatentDenoiser(LatentDenoiserConfig(latent_channels=3, grid=2, channels=6, blocks=1, hidden=8,
                                                     time_channels=4))
    den.train()
    with torch.no_grad():  # batch norm's running statistics from a few batches, so folding is not the identity
        for _ in range(3):
            den(torch.randn(16, 3, 2, 2), torch.randint(0, 1000, (16,)))
    model = LatentDDIM(vq, den, torch.tensor([0.1, -0.2, 0.3]), torch.tensor([1.5, 0.8, 1.1]), snap=snap)
    return model.eval()


def test_batch_norm_is_folded_into_the_exported_weights():
    model = _tiny()
    layer = model.denoiser.conv_a0
    assert not torch.allclose(layer.bn.running_var, torch.ones_like(layer.bn.running_var))
    x = torch.rand(5, 6, 2, 2)
    with torch.no_grad():
        torch.testing.assert_close(layer.fused()(x), layer(x), rtol=0, atol=1e-6)
        w, b = layer.folded()
        torch.testing.assert_close(torch.nn.functional.conv2d(x, w, b, padding=1), layer(x), rtol=0, atol=1e-6)


def test_float_lava_equals_pytorch_image_for_image_and_spike_for_spike():
    model = copy.deepcopy(_tiny()).double()  # the float path computes in float64
    noise = initial_noise(3, model.latent_shape, 0)
    lava = sample_lava(compile_sampler(sampler_graphs(model, SCHEDULE)), 3, 3, noise=noise.numpy(), target="sim",
                       progress=False)
    kind = kinds.get("latent-ddim")
    for i in range(3):
        stats = {}
        ref = kind.sample_torch(model, SCHEDULE, 1, 3, noise=noise[i:i + 1].double(), stats=stats, progress=False)
        np.testing.assert_allclose(lava["images"][i], ref[0].numpy(), rtol=0, atol=1e-6)
        for name in ("temb", "x0", "s0", "a0", "s1", "g"):
            assert lava["counters"][name]["active"].sum(1)[i] == stats[name], name
        for name in ("asg", "h1", "h2", "h3"):  # the decoder, one pass per image
            assert lava["final_counters"][name][i] == stats[name], name
    assert np.abs(lava["images"]).max() > 0.05 and sum(c["active"].sum() for c in lava["counters"].values()) > 0


@pytest.mark.parametrize("snap", [False, True], ids=["latents", "snapped to codes"])
def test_fixed_point_lava_equals_the_simulator(snap):
    sd = compile_sampler(sampler_graphs(_tiny(snap), SCHEDULE), fixed_point=True)
    lava = sample_lava(sd, 3, 3, seed=4, target="sim", progress=False)
    sim = sample_sim(sd, 3, 3, seed=4, batch_size=2)
    assert same_as_lava(sim, lava)
    assert sum(c.sum() for c in sim["final_counters"].values()) > 0


def test_quantization_aware_training_uses_the_deployed_grid():
    from spikediff.export.quantize import quantize_weights
    from spikediff.train.qat import QAT

    model = _tiny()
    qat = QAT(model, SCHEDULE)
    scales = qat.update_scales()
    dep = compile_sampler(sampler_graphs(model, SCHEDULE), fixed_point=True).loop
    net = model.denoiser
    assert set(scales) >= {"conv_in", "time_in", "conv_a0", "fc_1", "conv_ro"}
    for name in ("conv_s", "fc_out", "cond_a0"):
        layer = getattr(net, name)
        w = (layer.folded()[0] if hasattr(layer, "folded") else layer.weight).detach().numpy()
        ints = quantize_weights(w, scales[name])
        assert (ints == dep.fixed.weights[name].reshape(ints.shape)).all(), name  # the quantizer's own integers
    x = torch.randn(4, 3, 2, 2)
    t = torch.full((4,), 500)
    with torch.no_grad():
        quantized = net(x, t)
        net.qat_scales = None
        plain = net(x, t)
    assert 0 < (quantized - plain).abs().max() < 0.5  # close, but on the grid


def test_quantization_aware_training_of_the_decoder_uses_its_deployed_grid():
    from spikediff import SpikediffError
    from spikediff.export.quantize import quantize_weights
    from spikediff.export.split import part_of
    from spikediff.models.spiking_graph import fake_quantize
    from spikediff.train.qat import QAT

    model = _tiny()
    scales = QAT(model, SCHEDULE, role="decoder").update_scales()
    dep = compile_sampler(sampler_graphs(model, SCHEDULE), fixed_point=True, bias_correction=False).networks["decoder"]
    net = model.vq.decoder
    # a readout's synapses are deployed split into parallel parts (export.split): QAT runs them as such
    assert set(scales) == {part_of(f.syn.name) for f in dep.folded.synapses}
    assert set(net.qat_split) == {part_of(f.syn.name) for f in dep.folded.synapses
                                  if f.syn.name != part_of(f.syn.name)} != set()
    for name in scales:
        layer = getattr(net, name)
        w = (layer.folded()[0] if hasattr(layer, "folded") else layer.weight).detach()
        if name not in net.qat_split:
            ints = quantize_weights(w.numpy(), scales[name])
            assert (ints == dep.fixed.weights[name].reshape(ints.shape)).all(), name  # the quantizer's own integers
            continue
        ints = sum(v for k, v in dep.fixed.weights.items() if part_of(k) == name)  # its parts, summed
        got = fake_quantize(w.double(), scales[name], net.qat_split[name]).numpy() * scales[name]
        np.testing.assert_allclose(got, ints.reshape(got.shape), rtol=0, atol=1e-6, err_msg=name)
    assert not getattr(model.denoiser, "qat_scales", None)  # only the decoder trains so
    z = torch.randn(4, *model.latent_shape)
    with torch.no_grad():
        quantized = net(z)
        net.qat_scales = None
        plain = net(z)
    assert 0 < (quantized - plain).abs().max() < 0.5
    with pytest.raises(SpikediffError, match="no 'readout' network"):
        QAT(model, SCHEDULE, role="readout")


def test_cli_trains_samples_exports_and_reports_a_latent_sampler(tmp_path):
    def cli(*args):
        return run_main(*args, timeout=600)

    run = tmp_path / "run"
    res = cli("train", "--model", "latent-ddim", "--data", "mnist", "--data-limit", "64", "--steps", "4",
              "--batch-size", "8", "--channels", "4", "--hidden", "8", "--blocks", "1", "--qat-from", "2",
              "--out", run, "--quiet")
    assert res.returncode == 0, res.stderr
    assert (run / "resume.pt").is_file() and (run / "latents.pt").is_file()
    # the compact file continues the run in an empty folder, as on another machine
    moved = tmp_path / "moved"
    res = cli("train", "--model", "latent-ddim", "--data", "mnist", "--data-limit", "64", "--steps", "6",
              "--batch-size", "8", "--channels", "4", "--hidden", "8", "--blocks", "1", "--qat-from", "2",
              "--out", moved, "--resume-from", run / "resume.pt", "--quiet")
    assert res.returncode == 0, res.stderr
    start, end = (torch.load(f, weights_only=True) for f in (run / "resume.pt", moved / "last.pt"))
    assert start["step"] == 4 and end["step"] == 6
    assert any(not torch.equal(start["model"][k].float(), v.float()) for k, v in end["model"].items()
               if v.is_floating_point())  # it trained on from the file's weights
    res = cli("sample", run / "model.pt", "--backend", "lava", "--fixed-point", "-n", "2", "--steps", "2",
              "--solver", "dpm++", "-o", tmp_path / "s.png")
    assert res.returncode == 0, res.stderr
    assert "identical to spikediff's bit-exact simulator" in res.stdout and "decoder on Lava" in res.stdout
    res = cli("export", run / "model.pt", "-o", tmp_path / "l.nir", "--onnx", tmp_path / "l.onnx")
    assert res.returncode == 0, res.stderr
    for name in ("l.denoiser.nir", "l.decoder.nir", "l.denoiser.onnx", "l.decoder.onnx"):
        assert (tmp_path / name).stat().st_size > 0, name
    res = cli("report", run / "model.pt", "-n", "2", "--steps", "2", "-o", tmp_path / "rep", "--quiet")
    assert res.returncode == 0, res.stderr

    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert rep["kind"] == "latent-ddim" and set(rep["events_per_image"]) == {"denoiser", "decoder"}

    # the decoder stage: the sampler's decoder trained on its frozen encoder's latents, joined into one sampler
    dec = tmp_path / "dec"
    res = cli("train", "--model", "latent-decoder", "--init", run / "model.pt", "--data", "mnist", "--data-limit",
              "64", "--steps", "3", "--batch-size", "8", "--latent-noise", "0.1", "--qat-from", "1", "--out", dec,
              "--quiet")
    assert res.returncode == 0, res.stderr
    assert "reconstruction MSE" in res.stdout and (dec / "decoder" / "resume.pt").is_file()
    # quantization-aware from step 1: the decoder's run trained on the decoder's fixed-point grid
    assert set(torch.load(dec / "decoder" / "last.pt", weights_only=False)["qat_scales"]) >= {"gen", "conv_ro"}
    before, after = (torch.load(f, weights_only=True) for f in (run / "model.pt", dec / "model.pt"))
    assert after["kind"] == "latent-ddim" and after["latent"]["decoder"]["step"] == 3
    assert after["latent"]["decoder"]["qat_from"] == 1
    # both networks trained on their grids: the compiler bias-corrects each against its grid weights
    assert before["trained_on_grid"] == ["denoiser"] and after["trained_on_grid"] == ["decoder", "denoiser"]
    for key, value in before["autoencoder"].items():  # only the decoder's synapses moved
        moved = key.startswith("decoder.") and key.endswith(("weight", "bias"))
        assert torch.equal(value, after["autoencoder"][key]) != moved, key
    assert all(torch.equal(v, after["model"][k]) for k, v in before["model"].items())
    res = cli("sample", dec / "model.pt", "--backend", "torch", "-n", "2", "--steps", "2", "-o", tmp_path / "d.png")
    assert res.returncode == 0, res.stderr
    # run again: nothing left to train, joined again; a checkpoint of another kind is refused in one line
    res = cli("train", "--model", "latent-decoder", "--init", run / "model.pt", "--data", "mnist", "--data-limit",
              "64", "--steps", "3", "--batch-size", "8", "--latent-noise", "0.1", "--out", dec, "--quiet")
    assert res.returncode == 0 and "already trained" in res.stdout, res.stderr
    res = cli("train", "--model", "latent-decoder", "--init", "mnist", "--out", tmp_path / "bad", "--quiet")
    assert res.returncode == 2 and "not a latent-ddim or spiking-vq sampler" in res.stderr
    assert len(res.stderr.splitlines()) == 1
    assert not (tmp_path / "bad").exists()
