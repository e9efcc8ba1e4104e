"""Diffusion schedule, training targets and DDIM sampling."""

from .sampler import sample_torch
from .schedule import DDIMScheduler, NoiseSchedule

__all__ = ["DDIMScheduler", "NoiseSchedule", "sample_torch"]
