"""The readout split (export.split): a decoder's readout on a finer fixed-point grid, its large weights spread
over parallel synapses; the same function in float, a smaller error in fixed point, and Lava bit for bit."""

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch

from spikediff.export.deployment import compile_graph
from spikediff.export.nir_graph import sampler_graphs
from spikediff.export.plan import NirGraphError
from spikediff.export.simulator import evaluate
from spikediff.export.split import PART, part_of
from spikediff.models import SpikingTokenDenoiser, SpikingVQDiffusion, SpikingVQVAE, TokenDenoiserConfig, VQConfig
from spikediff.models.spiking_vq import READOUT_SPLIT
from spikediff.runtime.build import build
from spikediff.runtime.run import run_windows


@pytest.fixture(scope="module")
def decoder():
    """A tiny spiking-vq sampler's token decoder graph, one large weight planted in its skip synapse (the shape
    of the shipped decoders' readouts: a few large weights, many small), and calibration tokens."""
    torch.manual_seed(0)
    vq = SpikingVQVAE(VQConfig(image_size=8, channels=4, codebook_size=6, code_dim=3))
    torch.nn.init.normal_(vq.quantizer.codebook.weight)
    with torch.no_grad():
        vq.decoder.skip_ro.weight.mul_(0.1)
        vq.decoder.skip_ro.weight[0, 0, 1, 1] = 2.0
    model = SpikingVQDiffusion(vq, SpikingTokenDenoiser(TokenDenoiserConfig(codebook_size=6, grid=2)), "cosine")
    tokens = np.random.default_rng(0).integers(0, 6, (64, 2, 2))
    return sampler_graphs(model)["decoder"], model.trainable_decoder().one_hot(tokens).numpy()


def readout_error(dep, reference, x) -> float:
    return float(np.abs(evaluate(dep, x)["readout"] - reference).mean())


def test_parts_sum_to_the_weights_and_the_readout_grid_is_finer(decoder):
    graph, x = decoder
    assert graph.metadata["readout_split"] == READOUT_SPLIT == 4  # the decoder asks for it
    plain = compile_graph(graph, fixed_point=True, calibration=x, bias_correction=False, readout_split=1)
    split = compile_graph(graph, fixed_point=True, calibration=x, bias_correction=False)
    assert not any(PART in f.syn.name for f in plain.folded.synapses)
    into = {f.syn.name: f.weight for f in plain.folded.incoming("readout")}
    parts = {}
    for f in split.folded.incoming("readout"):
        parts.setdefault(part_of(f.syn.name), []).append(f.weight)
    assert parts.keys() == into.keys() and len(parts["skip_ro"]) == 4  # the planted weight needs all four
    cut = max(np.abs(w).max() for w in into.values()) / 4
    for name, weights in parts.items():
        np.testing.assert_allclose(sum(weights), into[name], rtol=0, atol=1e-12)
        assert all(np.abs(w).max() <= cut + 1e-12 for w in weights), name
        assert all(np.count_nonzero(w) <= np.count_nonzero(into[name] > cut) + np.count_nonzero(into[name] < -cut)
                   for w in weights[1:]), name  # the later parts hold only the large weights
    assert split.fixed.populations["readout"].scale >= 3.9 * plain.fixed.populations["readout"].scale
    for name in ("h1", "h2", "h3"):  # spiking layers untouched
        assert split.fixed.populations[name].scale == plain.fixed.populations[name].scale, name
        np.testing.assert_array_equal(split.fixed.weights[f"conv_{name}"], plain.fixed.weights[f"conv_{name}"])

    reference = evaluate(compile_graph(graph), x)["readout"]
    np.testing.assert_allclose(evaluate(replace(split, fixed=None), x)["readout"], reference, rtol=0,
                               atol=1e-9)  # in float, the split network is the trained one
    assert readout_error(split, reference, x) < 0.75 * readout_error(plain, reference, x)


def test_lava_runs_the_split_readout_bit_for_bit(decoder):
    graph, x = decoder
    dep = compile_graph(graph, fixed_point=True, calibration=x)
    assert any(PART in f.syn.name for f in dep.folded.synapses)
    ref = evaluate(dep, x[:3])
    got = run_windows(build(dep), x[:3], record_spikes=True)
    np.testing.assert_array_equal(got["readout"], ref["readout"])
    for name, counts in ref["spikes"].items():
        np.testing.assert_array_equal(got["spikes"][name], counts, err_msg=name)


@pytest.mark.parametrize("bad", [0, 1.5, "4", True, 65])
def test_a_bad_split_is_refused_in_one_line(decoder, bad):
    graph, x = decoder
    graph = copy.copy(graph)
    graph.metadata = {**graph.metadata, "readout_split": bad}
    with pytest.raises(NirGraphError, match="readout_split: expected an integer from 1 to 64") as err:
        compile_graph(graph, fixed_point=True, calibration=x)
    assert "\n" not in str(err.value)
