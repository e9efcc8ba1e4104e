"""Diffusion schedule, training targets and DDIM sampling."""

from .schedule import DDIMScheduler, NoiseSchedule
from .sampler import sample_torch

__all__ = ["DDIMScheduler", "NoiseSchedule", "sample_torch"]
