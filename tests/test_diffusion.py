import numpy as np
import pytest
import torch

from spikediff import SpikediffError
from spikediff.diffusion import DDIMScheduler, NoiseSchedule, sample_torch
from spikediff.models import DenoiserConfig, SpikingDenoiser


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("spacing", ["trailing", "leading"])
def test_ddim_matches_diffusers(prediction, spacing):
    diffusers = pytest.importorskip("diffusers")
    ref = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                                  prediction_type=prediction, clip_sample=True, timestep_spacing=spacing,
                                  set_alpha_to_one=True)
    ours = DDIMScheduler(NoiseSchedule(1000, prediction), timestep_spacing=spacing)
    np.testing.assert_allclose(ours.schedule.alphas_cumprod, ref.alphas_cumprod.numpy(), atol=1e-6)
    ref.set_timesteps(25)
    ours.set_timesteps(25)
    np.testing.assert_array_equal(ours.timesteps, ref.timesteps.numpy())
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, 6, 6, generator=gen, dtype=torch.float64)
    for t in ours.timesteps:
        out = torch.randn(x.shape, generator=gen, dtype=torch.float64)
        expected = ref.step(out, int(t), x).prev_sample
        x, _ = ours.step(out, t, x)
        torch.testing.assert_close(x, expected, atol=2e-5, rtol=1e-4)


def test_step_gives_the_same_result_on_numpy_and_torch():
    sched = DDIMScheduler(NoiseSchedule())
    sched.set_timesteps(10)
    x = np.random.default_rng(0).normal(size=(3, 4))
    eps = np.random.default_rng(1).normal(size=(3, 4))
    a, _ = sched.step(eps, sched.timesteps[3], x)
    b, _ = sched.step(torch.from_numpy(eps), sched.timesteps[3], torch.from_numpy(x))
    np.testing.assert_allclose(a, b.numpy(), rtol=1e-12)


def test_add_noise_matches_the_closed_form():
    sched = NoiseSchedule()
    x0, noise, t = torch.ones(2, 1, 2, 2), torch.zeros(2, 1, 2, 2), torch.tensor([0, 999])
    xt = sched.add_noise(x0, noise, t)
    assert float(xt[0].mean()) == pytest.approx(sched.alphas_cumprod[0] ** 0.5, rel=1e-6)
    assert float(xt[1].mean()) < 0.01  # almost pure noise at the last step


def test_bad_scheduler_options():
    with pytest.raises(SpikediffError, match="prediction type"):
        NoiseSchedule(prediction_type="x0")
    sched = DDIMScheduler(NoiseSchedule(100))
    with pytest.raises(SpikediffError, match="1..100"):
        sched.set_timesteps(0)
    with pytest.raises(SpikediffError, match="set_timesteps"):
        sched.step(np.zeros(2), 5, np.zeros(2))
    with pytest.raises(SpikediffError, match="spacing"):
        DDIMScheduler(NoiseSchedule(), timestep_spacing="linspace")


def test_sampling_shapes_and_determinism():
    torch.manual_seed(0)
    model = SpikingDenoiser(DenoiserConfig(image_size=8, channels=4, hidden=16))
    sched = NoiseSchedule()
    a = sample_torch(model, sched, 5, num_inference_steps=4, seed=3, batch_size=2, progress=False)
    b = sample_torch(model, sched, 5, num_inference_steps=4, seed=3, batch_size=5, progress=False)
    c = sample_torch(model, sched, 5, num_inference_steps=4, seed=4, progress=False)
    assert a.shape == (5, 1, 8, 8) and float(a.abs().max()) <= 1.0
    torch.testing.assert_close(a, b)  # batching does not change the result
    assert not torch.allclose(a, c)
