"""Cosine noise schedule (Nichol & Dhariwal 2021) and a DDIM scheduler with the ``set_timesteps``/``step`` idiom.

The arithmetic follows diffusers' ``squaredcos_cap_v2`` schedule and ``DDIMScheduler`` (eta = 0) and is
tested against it; it is written here because diffusers adds ~3 s of import time and a dozen dependencies
to every CLI call and every Lava sampler process, for a dozen lines of arithmetic. ``step`` uses only
arithmetic operators, so it works on torch tensors and numpy arrays alike (the Lava sampler holds numpy).
"""

from __future__ import annotations

import math

import numpy as np

from .. import SpikediffError

PREDICTION_TYPES = ("epsilon", "v_prediction")
SPACINGS = ("trailing", "leading")


class NoiseSchedule:
    """Discrete-time cosine schedule with ``num_train_timesteps`` steps."""

    def __init__(self, num_train_timesteps: int = 1000, prediction_type: str = "epsilon", max_beta: float = 0.999):
        if prediction_type not in PREDICTION_TYPES:
            raise SpikediffError(f"unknown prediction type {prediction_type!r}: choose one of {PREDICTION_TYPES}")
        if num_train_timesteps < 2:
            raise SpikediffError(f"num_train_timesteps={num_train_timesteps} must be >= 2")
        self.num_train_timesteps = num_train_timesteps
        self.prediction_type = prediction_type

        def alpha_bar(t: float) -> float:
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

        n = num_train_timesteps
        betas = np.array([min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), max_beta) for i in range(n)])
        self.betas = betas
        self.alphas_cumprod = np.cumprod(1.0 - betas)  # float64

    def add_noise(self, x0, noise, t):
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise, for a torch batch with t of shape (N,)."""
        import torch

        abar = torch.as_tensor(self.alphas_cumprod, device=x0.device)[t].to(x0.dtype).view(-1, 1, 1, 1)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def target(self, x0, noise, t):
        """What the denoiser is trained to output."""
        if self.prediction_type == "epsilon":
            return noise
        import torch

        abar = torch.as_tensor(self.alphas_cumprod, device=x0.device)[t].to(x0.dtype).view(-1, 1, 1, 1)
        return abar.sqrt() * noise - (1 - abar).sqrt() * x0


class DDIMScheduler:
    """Deterministic DDIM (eta = 0) over a ``NoiseSchedule``."""

    def __init__(self, schedule: NoiseSchedule, clip_sample: bool = True, timestep_spacing: str = "trailing"):
        if timestep_spacing not in SPACINGS:
            raise SpikediffError(f"unknown timestep spacing {timestep_spacing!r}: choose one of {SPACINGS}")
        self.schedule = schedule
        self.clip_sample = clip_sample
        self.timestep_spacing = timestep_spacing
        self.timesteps = np.array([], dtype=np.int64)
        self.num_inference_steps = 0

    def set_timesteps(self, num_inference_steps: int) -> None:
        n_train = self.schedule.num_train_timesteps
        if not 1 <= num_inference_steps <= n_train:
            raise SpikediffError(f"number of sampling steps must be in 1..{n_train}, got {num_inference_steps}")
        self.num_inference_steps = num_inference_steps
        if self.timestep_spacing == "trailing":
            ts = np.round(np.arange(n_train, 0, -n_train / num_inference_steps)).astype(np.int64) - 1
        else:
            ratio = n_train // num_inference_steps
            ts = (np.arange(0, num_inference_steps) * ratio).round()[::-1].astype(np.int64)
        self.timesteps = ts

    def previous_timestep(self, t: int) -> int:
        return int(t) - self.schedule.num_train_timesteps // self.num_inference_steps

    def step(self, model_output, t: int, sample):
        """One DDIM update x_t -> x_{t_prev}; returns (prev_sample, predicted x0)."""
        if self.num_inference_steps == 0:
            raise SpikediffError("call set_timesteps() before step()")
        acp = self.schedule.alphas_cumprod
        prev_t = self.previous_timestep(t)
        a_t = float(acp[int(t)])
        a_prev = float(acp[prev_t]) if prev_t >= 0 else 1.0
        b_t = 1.0 - a_t
        if self.schedule.prediction_type == "epsilon":
            x0 = (sample - b_t**0.5 * model_output) / a_t**0.5
            eps = model_output
        else:
            x0 = a_t**0.5 * sample - b_t**0.5 * model_output
            eps = a_t**0.5 * model_output + b_t**0.5 * sample
        if self.clip_sample:
            x0 = x0.clip(-1.0, 1.0)  # as diffusers: epsilon is not recomputed from the clipped x0
        prev = a_prev**0.5 * x0 + (1.0 - a_prev) ** 0.5 * eps
        return prev, x0
