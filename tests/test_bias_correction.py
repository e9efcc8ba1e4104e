"""Readout bias correction (``export.bias_correction``): on the shipped latent sampler's decoder, the fixed-point
readout's mean offset from float, measured on the kind's calibration inputs, is cancelled by a constant input
current; it must also shrink on real images' latents it never saw. (Lava, plain and hardware form, equal to the
simulator with the correction compiled in: ``test_loihi2.py``, ``test_runtime.py``.)"""

import numpy as np
import pytest
import torch

from spikediff.checkpoint import CheckpointError, load_model, load_raw, mark_on_grid, resolve, save_atomic
from spikediff.data import load_images, to_model_range
from spikediff.diffusion import kinds
from spikediff.export.bias_correction import correct_readout_bias, on_grid, step_gain
from spikediff.export.deployment import compile_graph
from spikediff.export.nir_graph import sampler_graphs
from spikediff.export.quantize import quantize_weights
from spikediff.export.simulator import Simulator


def _mean_readout(dep, z):
    return Simulator(dep).evaluate(z)["readout_int"].double().mean(dim=(0, 1)).numpy() / dep.readout_scale()


def test_the_fixed_point_decoder_loses_its_mean_offset_on_unseen_latents():
    model, schedule, _ = load_model("mnist-latent")
    graph = sampler_graphs(model, schedule, roles=("decoder",))["decoder"]
    calibration = kinds.of_model(model).calibration("decoder", dict(graph.metadata))
    # on the plain grid (the readout split, export.split, takes part of the offset away by itself)
    plain = compile_graph(graph, fixed_point=True, calibration=calibration, bias_correction=False, readout_split=1)
    corrected = compile_graph(graph, fixed_point=True, calibration=calibration, readout_split=1)
    flt = compile_graph(graph)
    ro = plain.plan.readout
    # one constant-current synapse into the readout is all that changed, and the change is reported
    added = set(corrected.fixed.weights) - set(plain.fixed.weights)
    assert added == {f"{ro}.bias_correction"} and np.abs(corrected.fixed.weights[f"{ro}.bias_correction"]).max() > 0
    assert all((corrected.fixed.weights[k] == w).all() for k, w in plain.fixed.weights.items())
    for name, q in plain.fixed.populations.items():  # no scale, threshold, decay or bias moved
        got = corrected.fixed.populations[name]
        assert (got.scale, got.du, got.dv, got.vth) == (q.scale, q.du, q.dv, q.vth), name
        assert np.array_equal(got.bias_mant, q.bias_mant) and np.array_equal(got.bias_exp, q.bias_exp), name
    assert any("offset cancelled" in n and "64 calibration inputs" in n for n in corrected.notes)
    assert not any("offset cancelled" in n for n in plain.notes)

    with torch.no_grad():  # latents of real test images: not what the correction was measured on
        z = model.vq.encoder(to_model_range(load_images("mnist", "test", limit=64)[0])).double().numpy()
    reference = _mean_readout(flt, z)
    before = np.abs(_mean_readout(plain, z) - reference)
    after = np.abs(_mean_readout(corrected, z) - reference)
    assert before.mean() > 0.01  # the offset is real: a few hundredths of the pixel range
    assert after.mean() < 0.5 * before.mean()


def test_step_gain_is_the_mean_of_the_bias_sums():
    assert step_gain(4096, 4) == 1.0  # v forgets everything: the bias once per step
    assert step_gain(0, 4) == 2.5  # v keeps everything: 1, 2, 3, 4
    assert abs(step_gain(2048, 4) - np.mean([1, 1.5, 1.75, 1.875])) < 1e-12


def test_a_quantization_aware_network_is_corrected_against_its_weights_on_the_grid(tmp_path):
    """A network trained on the fixed-point grid (``trained_on_grid`` in its checkpoint) is meant to be the float
    network with its grid weights: the correction measures the offset against that (what only the integer
    neurons add), not against its float weights, which would undo what its training learned."""
    path = tmp_path / "qat.pt"
    save_atomic(mark_on_grid(load_raw(resolve("mnist-latent")), "decoder", True), path)
    model, schedule, _ = load_model(path)
    assert model.trained_on_grid == ("decoder",)
    graphs = sampler_graphs(model, schedule)
    assert graphs["decoder"].metadata["trained_on_grid"] is True and "trained_on_grid" not in graphs["denoiser"].metadata
    graph = graphs["decoder"]
    calibration = kinds.of_model(model).calibration("decoder", dict(graph.metadata))
    plain = compile_graph(graph, fixed_point=True, calibration=calibration, bias_correction=False)
    grid = on_grid(plain)
    for f in grid.folded.synapses:  # the grid weights quantize to the same integers again
        assert np.array_equal(quantize_weights(f.weight, plain.fixed.weight_scale(f.syn)), plain.fixed.weights[f.syn.name])
    z = calibration
    fixed, to_grid, to_float = _mean_readout(plain, z), _mean_readout(grid, z), _mean_readout(compile_graph(graph), z)
    # most of the float offset is the weights' rounding, which a quantization-aware network trained with
    assert np.abs(fixed - to_grid).mean() < 0.5 * np.abs(fixed - to_float).mean()
    corrected = compile_graph(graph, fixed_point=True, calibration=calibration)
    same, _ = correct_readout_bias(plain, calibration, "grid")
    assert corrected.fixed.digest() == same.fixed.digest() != correct_readout_bias(plain, calibration)[0].fixed.digest()
    assert np.abs(_mean_readout(corrected, z) - to_grid).mean() < np.abs(fixed - to_grid).mean()

    save_atomic({**load_raw(path), "trained_on_grid": "decoder"}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="trained_on_grid must be a list of network roles"):
        load_model(tmp_path / "bad.pt")

