"""The hardware form of the fixed-point Lava graph: only processes with Loihi 2 models on the chip side, and
bit for bit the plain form and the simulator (checked on the CPU; no chip is reachable from here)."""

import numpy as np
import pytest
import torch
from conftest import run_cli

from spikediff.diffusion import NoiseSchedule
from spikediff.export.deployment import compile_sampler
from spikediff.export.nir_graph import sampler_graphs
from spikediff.export.simulator import evaluate
from spikediff.models import DenoiserConfig, SpikingDenoiser
from spikediff.runtime.build import build
from spikediff.runtime.run import run_windows

HOST_ONLY = {"Readout", "SpikeDelay", "LIFClear", "Conv64"}  # spikediff's Python-only neuron and synapse processes


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = SpikingDenoiser(DenoiserConfig(image_size=8, channels=4, hidden=16)).eval()
    return model, compile_sampler(sampler_graphs(model, NoiseSchedule(1000, "v_prediction")), fixed_point=True).loop


def test_hardware_form_equals_the_plain_form_and_the_simulator(tiny):
    model, dep = tiny
    x = model.make_input(torch.randn(3, 1, 8, 8), torch.tensor([999, 400, 3])).numpy()
    hw, plain = build(dep), build(dep, hardware=False)
    assert hw.hardware and hw.accumulating == {"readout"} and not plain.accumulating
    assert dep.folded.incoming("readout")[-1].syn.name == "readout.bias_correction"  # compiled in: still on chip
    kinds = {type(p).__name__ for p in hw.processes.values()}
    assert "DelaySparse" in kinds and not kinds & HOST_ONLY, kinds  # the skip path waits in its synapses
    assert {"Readout", "SpikeDelay"} <= {type(p).__name__ for p in plain.processes.values()}
    for proc in hw.processes.values():  # a delay per synapse: a scalar makes Lava store one per (out, in) pair
        if type(proc).__name__ == "DelaySparse":
            weights, delays = proc.weights.init, proc.delays.init
            assert getattr(delays, "nnz", None) == weights.nnz, type(delays)
    got, ref = run_windows(hw, x, record_spikes=True), evaluate(dep, x)
    same = run_windows(plain, x, record_spikes=True)
    assert np.abs(ref["readout"]).max() > 0
    np.testing.assert_array_equal(got["readout"], ref["readout"])
    np.testing.assert_array_equal(same["readout"], ref["readout"])
    for name, counts in ref["spikes"].items():
        np.testing.assert_array_equal(got["spikes"][name], counts, err_msg=name)


def test_inspect_shows_no_neuron_or_synapse_of_a_shipped_sampler_on_the_host():
    res = run_cli("inspect", "mnist-vq", "--fixed-point", "--target", "loihi2", timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("Neurons or synapses left on the host:\n  - none") == 2  # the SDID and the decoder
    assert "DelaySparse" in res.stdout and "LIFReset (sums its state)" in res.stdout
    res = run_cli("inspect", "mnist-vq", "--target", "loihi2", timeout=300)  # floating point: not for a chip
    assert "floating point: a chip runs fixed point only" in res.stdout


def test_a_chip_is_refused_in_floating_point_and_without_lava_loihi(tmp_path):
    res = run_cli("sample", "--backend", "lava", "--lava-target", "loihi2", "-n", "1", "-o", tmp_path / "a.png")
    assert res.returncode == 2 and "lava-loihi" in res.stderr
    res = run_cli("sample", "--backend", "lava", "--measure", "-n", "1", "-o", tmp_path / "b.png")
    assert res.returncode == 2 and "--measure" in res.stderr and not (tmp_path / "b.png").exists()
