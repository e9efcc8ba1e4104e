"""The pixel-space DDIM sampler (``fsddim``): one spiking denoiser over the image, the DDIM loop on the host.

Host side, in numpy: the input is the noisy image and constant time-feature planes; the readout's mean over
T, read in its 4 x 4 patch layout, is the prediction; DDIM updates the image. Arithmetic is in ``dtype``:
float64 on the floating-point path (compared with PyTorch run in float64), float32 in fixed point (what the
bit-exact simulator reproduces); the image itself is kept in float64, as the scheduler returns it.
"""

from __future__ import annotations

import numpy as np

from ...models.denoiser import time_features
from ..schedule import NoiseSchedule
from ..solvers import Solver, check_solver
from . import HostProgram, Kind


def host_input(x: np.ndarray, t: int, time_dim: int, max_period: float, dtype="float32") -> np.ndarray:
    """Images x (N, C, H, W) at diffusion step t -> the network input (N, C + time_dim, H, W), NIR layout:
    the image channels, then the time features as constant planes (the same values PyTorch injects)."""
    x = np.asarray(x, dtype=dtype)
    n, _c, h, w = x.shape
    feats = time_features([t], time_dim, max_period)[0].astype(dtype)
    return np.concatenate([x, np.broadcast_to(feats[None, :, None, None], (n, time_dim, h, w))], axis=1)


def unpatch(state: np.ndarray, lead_dims: int, readout_shape: tuple, patch: int) -> np.ndarray:
    """Readout state(s) (*lead, flat or (C r r, H/r, W/r)) in NIR order -> images (*lead, C, H, W): the
    ``pixel_shuffle`` the PyTorch models apply to their readout."""
    r = int(patch)
    co, hq, wq = (int(d) for d in readout_shape)
    c = co // (r * r)
    lead = state.shape[:lead_dims]
    x = state.reshape(*lead, c, r, r, hq, wq)
    return np.moveaxis(x, (-5, -4, -3, -2, -1), (-5, -3, -1, -4, -2)).reshape(*lead, c, hq * r, wq * r)


def solver_for(meta: dict, steps: int, solver: str = "ddim", clip_sample: bool = True) -> Solver:
    """The sampling solver of a run, on the noise schedule the graph's metadata names."""
    schedule = NoiseSchedule(int(meta["num_train_timesteps"]), str(meta["prediction_type"]))
    return Solver(solver, schedule, steps, clip_sample)


class DDIMKind(Kind):
    """What the two DDIM kinds share: the ``--solver`` option."""

    def options(self, solver=None, **given) -> dict:
        super().options(**given)
        return {"solver": check_solver(solver or "ddim")}


def standard_calibration(meta: dict, shape: tuple, make_input) -> np.ndarray:
    """Standard normal samples of ``shape`` at ten diffusion steps across the schedule, as host inputs: the
    fixed inputs a DDIM denoiser's fixed-point input scale is set on (from its metadata alone)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, *shape))
    ts = np.linspace(0, int(meta["num_train_timesteps"]) - 1, 10).round().astype(int)
    return np.concatenate([make_input(x, int(t), int(meta["time_features"]), float(meta["max_period"]), "float64")
                           for t in ts])


class PixelProgram(HostProgram):
    def __init__(self, meta: dict, noise: np.ndarray, steps: int, dtype="float32", solver: str = "ddim"):
        self.dtype = np.dtype(dtype)
        self.shape = tuple(int(d) for d in meta["image_shape"])
        self.state_shape = self.shape
        self.time_dim, self.max_period = int(meta["time_features"]), float(meta["max_period"])
        self.readout_shape, self.patch = tuple(int(d) for d in meta["readout_shape"]), int(meta["patch"])
        self.solver = solver_for(meta, steps, solver)
        self.steps = len(self.solver.timesteps)
        self.noise = np.asarray(noise, dtype=np.float32)

    def start(self, index):
        return self.noise[index].astype(np.float64)

    def inputs(self, state, index, step):
        return host_input(state, int(self.solver.timesteps[step]), self.time_dim, self.max_period, self.dtype)

    def update(self, state, index, step, readout):
        pred = unpatch(np.asarray(readout, dtype=self.dtype), 1, self.readout_shape, self.patch)
        state[...] = self.solver.step(index, pred, int(self.solver.timesteps[step]), state)

    def images(self, state, final_readout=None):
        return state.clip(-1, 1).astype(np.float32)


class PixelKind(DDIMKind):
    name = "fsddim"
    description = "FSDDIM-style spiking DDIM over pixels"

    def owns(self, model) -> bool:
        from ...models import SpikingDenoiser, SpikingUNet

        return isinstance(model, (SpikingDenoiser, SpikingUNet))

    def networks(self, model) -> dict:
        return {"denoiser": (model, {})}

    def calibration(self, role, meta):
        return standard_calibration(meta, tuple(int(d) for d in meta["image_shape"]), host_input)

    def program(self, metas, n, steps, seed=0, first=0, dtype="float32", noise=None, solver="ddim", **options):
        from ..sampler import initial_noise

        meta = metas["denoiser"]
        shape = tuple(int(d) for d in meta["image_shape"])
        if noise is None:
            noise = initial_noise(first + n, shape, seed).numpy()[first:]
        return PixelProgram(meta, noise, steps, dtype, solver)

    def sample_torch(self, model, schedule, n, steps, seed=0, batch_size=64, device="cpu", progress=True, stats=None,
                     first=0, noise=None, solver="ddim", **options):
        import torch

        from ..sampler import initial_noise, sample_torch

        if noise is None:
            noise = initial_noise(first + n, model.image_shape, seed)[first:]
        with torch.no_grad():
            return sample_torch(model, schedule, n, steps, batch_size=batch_size, device=device, progress=progress,
                                stats=stats, noise=torch.as_tensor(noise), solver=solver)
