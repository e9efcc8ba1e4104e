"""Spiking networks, built only from operations the NIR -> Lava path can run."""

from .denoiser import DenoiserConfig, SpikingDenoiser
from .spiking_vq import SpikingVQVAE, VQConfig
from .token_denoiser import SpikingTokenDenoiser, TokenDenoiserConfig
from .vq_diffusion import SpikingVQDiffusion

__all__ = ["DenoiserConfig", "SpikingDenoiser", "SpikingTokenDenoiser", "SpikingVQDiffusion", "SpikingVQVAE",
           "TokenDenoiserConfig", "VQConfig"]
