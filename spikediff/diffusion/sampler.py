"""DDIM sampling with the PyTorch backend (images, or the latents of a latent sampler)."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from .schedule import NoiseSchedule

DEFAULT_INFERENCE_STEPS = 20


def initial_noise(n: int, shape: tuple, seed: int) -> torch.Tensor:
    """x_T for n images; the same seed gives the same noise on every backend and device."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn((n, *shape), generator=gen)


@torch.no_grad()
def sample_torch(model, schedule: NoiseSchedule, n: int, num_inference_steps: int = DEFAULT_INFERENCE_STEPS, seed: int = 0,
                 batch_size: int = 64, device: str | torch.device = "cpu", progress: bool = True,
                 stats: dict | None = None, noise: torch.Tensor | None = None, shape: tuple | None = None,
                 clip_sample: bool = True, solver: str = "ddim") -> torch.Tensor:
    """Generate n samples with the denoiser ``model`` on CPU, from ``noise`` if given (else from seed): images
    in [-1, 1], shape (n, C, H, W); or with ``shape`` and ``clip_sample=False`` unbounded latents. ``solver``:
    ddim, dpm++ or unipc (``solvers``)."""
    from .solvers import Solver

    shape = tuple(shape or model.image_shape)
    x = initial_noise(n, shape, seed) if noise is None else torch.as_tensor(noise)
    model = model.to(device).eval()
    out = []
    batches = range(0, n, batch_size)
    bar = tqdm(total=len(batches) * num_inference_steps, desc="sampling", unit="step", disable=not progress)
    for start in batches:
        xb = x[start:start + batch_size].to(device)
        scheduler = Solver(solver, schedule, num_inference_steps, clip_sample)  # a multistep solver's state: per batch
        for t in scheduler.timesteps:
            pred = model(xb, torch.full((xb.shape[0],), int(t), device=device), stats=stats)
            xb = scheduler.torch_step(pred, t, xb)
            bar.update(1)
        out.append((xb.clamp(-1, 1) if clip_sample else xb).cpu())
    bar.close()
    return torch.cat(out)
