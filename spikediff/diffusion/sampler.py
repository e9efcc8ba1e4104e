"""DDIM sampling with the PyTorch backend."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from .schedule import DDIMScheduler, NoiseSchedule

DEFAULT_INFERENCE_STEPS = 20


def initial_noise(n: int, shape: tuple, seed: int) -> torch.Tensor:
    """x_T for n images; the same seed gives the same noise on every backend and device."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn((n, *shape), generator=gen)


@torch.no_grad()
def sample_torch(model, schedule: NoiseSchedule, n: int, num_inference_steps: int = DEFAULT_INFERENCE_STEPS, seed: int = 0,
                 batch_size: int = 64, device: str | torch.device = "cpu", progress: bool = True,
                 stats: dict | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
    """Generate n images in [-1, 1], shape (n, C, H, W), on CPU, from ``noise`` if given (else from seed)."""
    cfg = model.config
    x = initial_noise(n, (cfg.in_channels, cfg.image_size, cfg.image_size), seed) if noise is None else noise
    scheduler = DDIMScheduler(schedule)
    scheduler.set_timesteps(num_inference_steps)
    model = model.to(device).eval()
    out = []
    batches = range(0, n, batch_size)
    bar = tqdm(total=len(batches) * num_inference_steps, desc="sampling", unit="step", disable=not progress)
    for start in batches:
        xb = x[start:start + batch_size].to(device)
        for t in scheduler.timesteps:
            pred = model(xb, torch.full((xb.shape[0],), int(t), device=device), stats=stats)
            xb, _ = scheduler.step(pred, t, xb)
            bar.update(1)
        out.append(xb.clamp(-1, 1).cpu())
    bar.close()
    return torch.cat(out)
