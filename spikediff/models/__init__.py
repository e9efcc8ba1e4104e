"""Spiking denoisers, built only from operations the NIR -> Lava path can run."""

from .denoiser import DenoiserConfig, SpikingDenoiser

__all__ = ["DenoiserConfig", "SpikingDenoiser"]
