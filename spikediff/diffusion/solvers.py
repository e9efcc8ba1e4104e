"""Sampling solvers for the DDIM kinds: deterministic DDIM (ours, tested against diffusers') and diffusers'
multistep solvers, DPM-Solver++ (2M) and UniPC, which reach a given quality in fewer denoising steps, and so
at less energy per image.

A multistep solver keeps the model's last outputs, so every image has its own solver state: in the Lava host
process images are interleaved by the pipeline, and the simulator steps them one by one with the same per-image
arithmetic, so the two agree bit for bit. All use "trailing" timestep spacing and no clipping for latents.
"""

from __future__ import annotations

import numpy as np

from .. import SpikediffError
from .schedule import DDIMScheduler, NoiseSchedule

SOLVERS = ("ddim", "dpm++", "unipc")


def check_solver(name: str) -> str:
    if name not in SOLVERS:
        raise SpikediffError(f"--solver {name!r}: choose one of {', '.join(SOLVERS)}")
    return name


def _diffusers(name: str, schedule: NoiseSchedule, steps: int):
    """A diffusers multistep scheduler on our cosine schedule (its betas given explicitly)."""
    from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler

    common = dict(num_train_timesteps=schedule.num_train_timesteps, trained_betas=schedule.betas.tolist(),
                  prediction_type=schedule.prediction_type, timestep_spacing="trailing", solver_order=2)
    if name == "dpm++":
        s = DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", lower_order_final=True, **common)
    else:
        s = UniPCMultistepScheduler(**common)
    s.set_timesteps(steps)
    return s


class Solver:
    """Steps images through a sampling run: ``timesteps``, and ``step(index, pred, t, x)`` for a batch of images
    (numpy, their indices in the run) -> the next x. ``batched(step)`` runs whole batches at once for a solver
    without per-image state (DDIM); others step image by image."""

    def __init__(self, name: str, schedule: NoiseSchedule, steps: int, clip_sample: bool = True):
        self.name = check_solver(name)
        self.schedule, self.steps, self.clip_sample = schedule, int(steps), clip_sample
        if int(steps) < 1 or int(steps) > schedule.num_train_timesteps:
            raise SpikediffError(f"number of sampling steps must be in 1..{schedule.num_train_timesteps}, got {steps}")
        if self.name == "ddim":
            self._ddim = DDIMScheduler(schedule, clip_sample=clip_sample)
            self._ddim.set_timesteps(int(steps))
            self.timesteps = self._ddim.timesteps
        else:
            self._states: dict = {}
            self.timesteps = np.asarray(_diffusers(self.name, schedule, int(steps)).timesteps.numpy(), dtype=np.int64)

    def step(self, index, pred: np.ndarray, t: int, x: np.ndarray) -> np.ndarray:
        if self.name == "ddim":
            return self._ddim.step(pred, int(t), x)[0]
        import torch

        out = np.empty(np.broadcast(x, x).shape, dtype=np.result_type(pred, x))
        for k, i in enumerate(np.atleast_1d(index)):
            state = self._states.get(int(i))
            if state is None:
                state = self._states[int(i)] = _diffusers(self.name, self.schedule, self.steps)
            # copies: diffusers keeps references to past samples and outputs, and the caller's arrays change
            res = state.step(torch.from_numpy(np.array(pred[k:k + 1])), int(t), torch.from_numpy(np.array(x[k:k + 1])))
            out[k] = res.prev_sample.numpy()[0]
        return out

    def torch_step(self, pred, t, x):
        """One step for a torch batch (the float PyTorch sampler: one solver state for the batch)."""
        if self.name == "ddim":
            return self._ddim.step(pred, int(t), x)[0]
        if not hasattr(self, "_batch"):
            self._batch = _diffusers(self.name, self.schedule, self.steps)
        return self._batch.step(pred, int(t), x).prev_sample
