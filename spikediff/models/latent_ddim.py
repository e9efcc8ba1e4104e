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
        return self.decoder_reads(z * self.latent_std + self.latent_mean)

    def decoder_reads(self, z_e: torch.Tensor) -> torch.Tensor:
        """The encoder's latents z_e -> what this sampler's decoder is handed for them (the decoder stage's
        inputs): the latents, or with ``snap`` their nearest code vectors."""
        return self.vq.quantizer.lookup(self.vq.quantizer.indices(z_e)) if self.snap else z_e

    def trainable_decoder(self) -> nn.Module:
        """The module the decoder stage trains: the spiking decoder itself (it reads ``decoder_reads``)."""
        return self.vq.decoder

    @torch.no_grad()
    def decode(self, z: torch.Tensor, stats: dict | None = None) -> torch.Tensor:
        """Standardized latents -> images in [-1, 1] through the spiking decoder."""
        return self.vq.decoder(self.decoder_input(z), stats).clamp(-1, 1)
