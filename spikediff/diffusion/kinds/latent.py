"""The latent spiking DDIM sampler (``latent-ddim``): DDIM over the standardized latent grid of a spiking
autoencoder with the spiking latent denoiser, then one pass of the autoencoder's spiking decoder.

Host side, in numpy: the denoiser's input is the noisy latent planes and constant time-feature planes; its
mean readout is the prediction in the latent's own layout; DDIM (no clipping: latents are not bounded like
pixels) updates the latent. The decoder's input is the latent mapped back (``z * std + mean``, and snapped
to the nearest code vector where the sampler asks for it); its mean readout, read in patch layout, is the
image. Arithmetic in ``dtype`` as for the pixel sampler.
"""

from __future__ import annotations

import numpy as np

from ...models.denoiser import time_features
from . import HostProgram
from .pixel import DDIMKind, solver_for, standard_calibration, unpatch


def latent_input(z: np.ndarray, t: int, time_dim: int, max_period: float, dtype="float32") -> np.ndarray:
    """Latents z (N, D, G, G) at step t -> the denoiser input (N, D + time_dim, G, G): the latent planes, then
    the time features as constant planes."""
    z = np.asarray(z, dtype=dtype)
    n, _d, g, h = z.shape
    feats = time_features([t], time_dim, max_period)[0].astype(dtype)
    return np.concatenate([z, np.broadcast_to(feats[None, :, None, None], (n, time_dim, g, h))], axis=1)


def nearest_codes(z: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """Each cell's nearest code vector: z (N, D, G, G), codebook (K, D) -> (N, D, G, G). Per element sums (no
    matrix product), so the choice does not depend on the batch."""
    cells = np.moveaxis(np.asarray(z, np.float64), 1, -1)  # (N, G, G, D)
    dist = ((cells[..., None, :] - codebook[None, None, None]) ** 2).sum(-1)  # (N, G, G, K)
    return np.moveaxis(codebook[dist.argmin(-1)], -1, 1)


class LatentProgram(HostProgram):
    final = "decoder"

    def __init__(self, metas: dict, noise: np.ndarray, steps: int, dtype="float32", solver: str = "ddim"):
        ms, md = metas["denoiser"], metas["decoder"]
        self.dtype = np.dtype(dtype)
        self.state_shape = tuple(int(d) for d in ms["latent_shape"])
        self.time_dim, self.max_period = int(ms["time_features"]), float(ms["max_period"])
        self.solver = solver_for(ms, steps, solver, clip_sample=False)
        self.steps = len(self.solver.timesteps)
        self.noise = np.asarray(noise, dtype=np.float32)
        d = self.state_shape[0]
        self.mean = np.asarray(ms["latent_mean"], np.float64).reshape(1, d, 1, 1)
        self.std = np.asarray(ms["latent_std"], np.float64).reshape(1, d, 1, 1)
        self.codebook = np.asarray(ms["codebook"], np.float64) if ms.get("snap") else None
        self.readout_shape, self.patch = tuple(int(d) for d in md["readout_shape"]), int(md["patch"])

    def start(self, index):
        return self.noise[index].astype(np.float64)

    def inputs(self, state, index, step):
        return latent_input(state, int(self.solver.timesteps[step]), self.time_dim, self.max_period, self.dtype)

    def update(self, state, index, step, readout):
        pred = np.asarray(readout, dtype=self.dtype).reshape(len(state), *self.state_shape)
        state[...] = self.solver.step(index, pred, int(self.solver.timesteps[step]), state)

    def final_inputs(self, state, index):
        z = state * self.std + self.mean
        return nearest_codes(z, self.codebook) if self.codebook is not None else z

    def images(self, state, final_readout=None):
        return unpatch(final_readout.mean(1), 1, self.readout_shape, self.patch).clip(-1, 1).astype(np.float32)

    def extras(self, state):
        return {"latents": state.astype(np.float32)}


class LatentKind(DDIMKind):
    name = "latent-ddim"
    roles = ("denoiser", "decoder")
    description = "latent spiking DDIM over a spiking autoencoder's latents, then its spiking decoder"

    def owns(self, model) -> bool:
        from ...models.latent_ddim import LatentDDIM

        return isinstance(model, LatentDDIM)

    def networks(self, model) -> dict:
        stats = {"latent_mean": model.latent_mean.reshape(-1).tolist(), "latent_std": model.latent_std.reshape(-1).tolist()}
        host = {**stats, "snap": bool(model.snap)}
        if model.snap:
            host["codebook"] = model.vq.quantizer.codebook.weight.detach().double().numpy()
        return {"denoiser": (model.denoiser, host), "decoder": (model.vq.decoder, stats)}

    def calibration(self, role, meta):
        if role == "denoiser":
            return standard_calibration(meta, tuple(int(d) for d in meta["latent_shape"]), latent_input)
        # the decoder reads de-standardized latents: standard normal ones mapped back (the metadata of the
        # denoiser graph holds the statistics; the decoder graph carries a copy)
        d, g = int(meta["code_dim"]), int(meta["image_shape"][-1]) // int(meta["patch"])
        z = np.random.default_rng(0).standard_normal((64, d, g, g))
        mean = np.asarray(meta.get("latent_mean", np.zeros(d)), np.float64).reshape(1, d, 1, 1)
        std = np.asarray(meta.get("latent_std", np.ones(d)), np.float64).reshape(1, d, 1, 1)
        return z * std + mean

    def program(self, metas, n, steps, seed=0, first=0, dtype="float32", noise=None, solver="ddim", **options):
        from ..sampler import initial_noise

        shape = tuple(int(d) for d in metas["denoiser"]["latent_shape"])
        if noise is None:
            noise = initial_noise(first + n, shape, seed).numpy()[first:]
        return LatentProgram(metas, noise, steps, dtype, solver)

    def sample_torch(self, model, schedule, n, steps, seed=0, batch_size=64, device="cpu", progress=True, stats=None,
                     first=0, noise=None, solver="ddim", **options):
        """Standardized latents by DDIM with the spiking latent denoiser (no clipping), then one pass of the
        spiking decoder per image."""
        import torch

        from ..sampler import initial_noise, sample_torch

        if noise is None:
            noise = initial_noise(first + n, model.latent_shape, seed)[first:]
        z = sample_torch(model.denoiser, schedule, n, steps, batch_size=batch_size, device=device, progress=progress,
                         stats=stats, noise=noise, shape=model.latent_shape, clip_sample=False, solver=solver)
        model.to(device)
        return torch.cat([model.decode(z[i:i + batch_size].to(device), stats).cpu() for i in range(0, n, batch_size)])
