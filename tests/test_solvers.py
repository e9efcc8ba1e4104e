"""Multistep solvers (diffusers' DPM-Solver++ and UniPC) in every backend: Lava's host process and the
simulator step each image with its own solver state, so they agree bit for bit, and the float path agrees
with PyTorch."""

import numpy as np
import pytest
import torch

from spikediff import SpikediffError
from spikediff.diffusion import NoiseSchedule
from spikediff.diffusion.kinds import get
from spikediff.diffusion.sampler import initial_noise
from spikediff.diffusion.solvers import Solver
from spikediff.export.deployment import compile_sampler
from spikediff.export.nir_graph import sampler_graphs
from spikediff.hardware_sim.sampler import same_as_lava, sample_sim
from spikediff.models import DenoiserConfig, SpikingDenoiser
from spikediff.runtime.run import sample_lava

SCHEDULE = NoiseSchedule(1000, "v_prediction")


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return SpikingDenoiser(DenoiserConfig(image_size=8, channels=4, hidden=16)).eval()


@pytest.mark.parametrize("solver", ["dpm++", "unipc"])
def test_a_multistep_run_does_not_depend_on_the_batch(tiny, solver):
    sd = compile_sampler(sampler_graphs(tiny, SCHEDULE), fixed_point=True)
    one = sample_sim(sd, 3, 4, solver=solver, batch_size=1)
    many = sample_sim(sd, 3, 4, solver=solver, batch_size=3)
    np.testing.assert_array_equal(one["images"], many["images"])
    ddim = sample_sim(sd, 3, 4, batch_size=3)
    assert np.abs(ddim["images"] - many["images"]).max() > 1e-3  # a different solver, different images


def test_dpm_solver_on_lava_equals_the_simulator_and_pytorch(tiny):
    noise = initial_noise(3, (1, 8, 8), 0).numpy()
    sd = compile_sampler(sampler_graphs(tiny, SCHEDULE), fixed_point=True)
    fixed = sample_lava(sd, 3, 4, noise=noise, solver="dpm++", target="sim", progress=False)
    assert same_as_lava(sample_sim(sd, 3, 4, noise=noise, solver="dpm++"), fixed)
    floating = sample_lava(compile_sampler(sampler_graphs(tiny, SCHEDULE)), 3, 4, noise=noise, solver="dpm++",
                           target="sim", progress=False)
    ref = get("fsddim").sample_torch(tiny.double(), SCHEDULE, 3, 4, noise=torch.from_numpy(noise).double(),
                                     solver="dpm++", progress=False)
    tiny.float()
    assert np.abs(ref.numpy()).max() > 0.1
    np.testing.assert_allclose(floating["images"], ref.numpy(), rtol=0, atol=1e-6)


def test_solver_names_and_steps_are_checked():
    with pytest.raises(SpikediffError, match="--solver 'heun'"):
        Solver("heun", SCHEDULE, 10)
    with pytest.raises(SpikediffError, match="1..1000"):
        Solver("dpm++", SCHEDULE, 0)
    assert len(Solver("unipc", SCHEDULE, 7).timesteps) == 7 == len(Solver("ddim", SCHEDULE, 7).timesteps)
