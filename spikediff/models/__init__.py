"""Spiking networks, built only from operations the NIR -> Lava path can run."""

from .denoiser import DenoiserConfig, SpikingDenoiser
from .spiking_vq import SpikingVQVAE, VQConfig
from .token_denoiser import SpikingTokenDenoiser, TokenDenoiserConfig
from .unet import SpikingUNet, UNetConfig
from .vq_diffusion import SpikingVQDiffusion

__all__ = ["DenoiserConfig", "SpikingDenoiser", "SpikingTokenDenoiser", "SpikingUNet", "SpikingVQDiffusion",
           "SpikingVQVAE", "TokenDenoiserConfig", "UNetConfig", "VQConfig"]
