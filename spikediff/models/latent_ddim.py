"""The latent spiking DDIM sampler as one object: a spiking autoencoder (the VQ-SVAE's encoder taken before
quantization, and its spiking decoder), the per-channel statistics that standardize its latents, and the
spiking latent denoiser (what a ``latent-ddim`` checkpoint holds).

Diffusion runs on standardized latents ``(z_e - mean) / std``; a sample is mapped back and decoded by the
spiking decoder, optionally after snapping every grid cell to its nearest code vector (``snap``: the decoder
then sees exactly the inputs it was trained on).
"""

from __future__ import annotations

import torch
from torch import nn

from .latent_denoiser import SpikingLatentDenoiser
from .spiking_vq import SpikingVQVAE

KIND = "latent-ddim"


class LatentDDIM(nn.Module):
    def __init__(self, vq: SpikingVQVAE, denoiser: SpikingLatentDenoiser, mean, std, snap: bool = False):
        super().__init__()
        self.vq, self.denoiser, self.snap = vq, denoiser, bool(snap)
        d = denoiser.config.latent_channels
        self.register_buffer("latent_mean", torch.as_tensor(mean, dtype=torch.float32).reshape(1, d, 1, 1))
        self.register_buffer("latent_std", torch.as_tensor(std, dtype=torch.float32).reshape(1, d, 1, 1))

    @property
    def image_shape(self) -> tuple:
        cfg = self.vq.config
        return (cfg.in_channels, cfg.image_size, cfg.image_size)

    @property
    def latent_shape(self) -> tuple:
        return self.denoiser.latent_shape

    @property
    def num_steps(self) -> int:
        return self.denoiser.config.num_steps

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W) in [-1, 1] -> standardized latents (N, D, G, G)."""
        return (self.vq.encoder(x) - self.latent_mean) / self.latent_std

    def decoder_input(self, z: torch.Tensor) -> torch.Tensor:
        """Standardized latents -> what the spiking decoder reads (latents, or their nearest code vectors)."""
        z = z * self.latent_std + self.latent_mean
        return self.vq.quantizer.lookup(self.vq.quantizer.indices(z)) if self.snap else z

    @torch.no_grad()
    def decode(self, z: torch.Tensor, stats: dict | None = None) -> torch.Tensor:
        """Standardized latents -> images in [-1, 1] through the spiking decoder."""
        return self.vq.decoder(self.decoder_input(z), stats).clamp(-1, 1)

    @torch.no_grad()
    def sample_latents(self, schedule, n: int, steps: int, seed: int = 0, batch_size: int = 64, device="cpu",
                       progress: bool = True, stats: dict | None = None, first: int = 0,
                       noise=None) -> torch.Tensor:
        """n standardized latents by deterministic DDIM (no clipping: latents are not bounded like pixels),
        from ``noise`` or the seed's (image i gets the noise of image ``first + i``)."""
        from tqdm.auto import tqdm

        from ..diffusion.sampler import initial_noise
        from ..diffusion.schedule import DDIMScheduler

        x = initial_noise(first + n, self.latent_shape, seed)[first:] if noise is None else torch.as_tensor(noise)
        scheduler = DDIMScheduler(schedule, clip_sample=False)
        scheduler.set_timesteps(steps)
        net = self.denoiser.to(device).eval()
        out = []
        bar = tqdm(total=-(-n // batch_size) * steps, desc="sampling latents", unit="step", disable=not progress)
        for start in range(0, n, batch_size):
            xb = x[start:start + batch_size].to(device)
            for t in scheduler.timesteps:
                pred = net(xb, torch.full((xb.shape[0],), int(t), device=device), stats=stats)
                xb, _ = scheduler.step(pred, t, xb)
                bar.update(1)
            out.append(xb.cpu())
        bar.close()
        return torch.cat(out)

    @torch.no_grad()
    def sample(self, schedule, n: int, steps: int, seed: int = 0, batch_size: int = 64, device="cpu",
               progress: bool = True, stats: dict | None = None, first: int = 0, noise=None) -> torch.Tensor:
        """n images in [-1, 1]: latents by DDIM, then one pass of the spiking decoder."""
        z = self.sample_latents(schedule, n, steps, seed, batch_size, device, progress, stats, first, noise)
        self.to(device)
        return torch.cat([self.decode(z[i:i + batch_size].to(device), stats).cpu() for i in range(0, n, batch_size)])
