"""The Spiking-Diffusion sampler as one object: the VQ-SVAE's decoder and codebook, the SDID denoiser and
the mask schedule it was trained with (what a ``spiking-vq`` checkpoint holds)."""

from __future__ import annotations

import torch
from torch import nn

from .spiking_vq import SpikingVQVAE
from .token_denoiser import SpikingTokenDenoiser

KIND = "spiking-vq"  # checkpoint "kind"; checkpoints without one are FSDDIM-style denoisers


class SpikingVQDiffusion(nn.Module):
    def __init__(self, vq: SpikingVQVAE, sdid: SpikingTokenDenoiser, mask_schedule: str = "cosine"):
        super().__init__()
        self.vq, self.sdid, self.mask_schedule = vq, sdid, mask_schedule

    @property
    def image_shape(self) -> tuple:
        cfg = self.vq.config
        return (cfg.in_channels, cfg.image_size, cfg.image_size)

    @property
    def num_steps(self) -> int:
        """T of the SDID denoiser (the decoder's may differ; both are in the checkpoint's model_config)."""
        return self.sdid.config.num_steps

    def decoder_reads(self, z_e: torch.Tensor) -> torch.Tensor:
        """The encoder's latents z_e -> what the decoder is handed for them, the decoder stage's inputs: their
        tokens (N, G, G); ``trainable_decoder().host_input`` makes them its one-hot input."""
        return self.vq.quantizer.indices(z_e)

    def trainable_decoder(self) -> nn.Module:
        """The decoder in the form it is deployed (one-hot tokens in, the codebook folded into its first
        layer), sharing the VQ-SVAE decoder's parameters: what the decoder stage trains."""
        from .spiking_vq import TokenDecoder

        return TokenDecoder(self.vq.decoder, self.vq.quantizer.codebook.weight.detach(), tied=True)

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor, batch_size: int = 64, device="cpu", stats: dict | None = None) -> torch.Tensor:
        """Token grids (N, G, G) -> images in [-1, 1] with the spiking decoder, a batch at a time."""
        self.vq.to(device).eval()
        parts = [self.vq.decode(tokens[i:i + batch_size].to(device), stats).cpu() for i in range(0, len(tokens), batch_size)]
        return torch.cat(parts)
