"""Training of the latent spiking DDIM (``spikediff train --model latent-ddim``).

The autoencoder is a trained spiking-vq checkpoint (``--autoencoder``, a shipped name or a file): its
spiking encoder, taken before quantization, maps the training set once to latents (``OUT/latents.pt``,
cached and keyed by the autoencoder's weights); their per-channel mean and standard deviation standardize
them. The spiking latent denoiser then learns DDPM denoising of the standardized latents with the same
``trainer.fit`` loop as the pixel-space denoiser (resumable, atomic checkpoints, EMA, Ctrl-C saves). Every
checkpoint carries the autoencoder and the statistics, so ``OUT/model.pt`` is a complete sampler at any
point of the run.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .. import SpikediffError
from ..checkpoint import FORMAT, VERSION, load_model, mark_on_grid, resolve, save_atomic
from ..data import load_images, to_model_range
from ..diffusion import NoiseSchedule
from ..models.latent_ddim import KIND, LatentDDIM
from ..models.latent_denoiser import LatentDenoiserConfig, SpikingLatentDenoiser
from ..models.vq_diffusion import SpikingVQDiffusion
from .qat import before_step_hook
from .qat import check_options as check_qat_options
from .qat import ran as qat_ran
from .trainer import Stage, check_run_options, fit, resolve_device, run_directory


@dataclass
class LatentTrainConfig:
    data: str = "mnist"
    autoencoder: str = "mnist-vq"  # a spiking-vq checkpoint (shipped name or path)
    steps: int = 20000
    batch_size: int = 128
    lr: float = 1e-3
    lr_min: float = 1e-4
    decay_steps: int | None = None  # cosine decay of the learning rate to lr_min at this step (None: constant)
    warmup: int = 200
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    prediction_type: str = "v_prediction"
    num_train_timesteps: int = 1000
    snap: bool = False  # decode the nearest code vectors of a sample rather than the sample itself
    qat_from: int | None = None  # quantization-aware training from this step on (``train.qat``)
    qat_refresh: int = 50  # steps between refreshes of the fixed-point scales
    seed: int = 0
    data_limit: int | None = None
    checkpoint_every: int = 250
    log_every: int = 25
    device: str = "auto"
    model: LatentDenoiserConfig = field(default_factory=LatentDenoiserConfig)

    def validate(self) -> LatentTrainConfig:
        check_run_options(self)
        check_qat_options(self)
        self.model.validate()
        return self

    def options(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "model"}


RESUME_KEYS = ("data", "batch_size", "lr", "lr_min", "decay_steps", "seed", "prediction_type",
               "num_train_timesteps", "data_limit", "autoencoder_sha256")


def state_digest(state: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def load_autoencoder(name: str):
    """The VQ-SVAE of a spiking-vq checkpoint (shipped name or path), in eval mode."""
    model, _, _ = load_model(resolve(name))
    if not isinstance(model, SpikingVQDiffusion):
        raise SpikediffError(f"--autoencoder {name}: not a spiking-vq checkpoint (its VQ-SVAE is the autoencoder)")
    return model.vq.eval().requires_grad_(False)


@torch.no_grad()
def encode_dataset(vq, data: torch.Tensor, path: Path, stamp: dict, progress: bool) -> torch.Tensor:
    """The training images as latents z_e (N, D, G, G), cached in ``path`` under ``stamp``."""
    if path.exists():
        cached = torch.load(path, weights_only=True)
        if cached.get("stamp") == stamp:
            return cached["latents"]
    parts = []
    for start in tqdm(range(0, len(data), 500), desc="encoding the training set", unit="batch", disable=not progress):
        parts.append(vq.encoder(data[start:start + 500]).cpu())
    latents = torch.cat(parts)
    save_atomic({"stamp": stamp, "latents": latents}, path)
    return latents


def train_latent_ddim(cfg: LatentTrainConfig, out_dir: str | Path, progress: bool = True, log=print,
                      resume_from: Path | None = None, init: str | None = None) -> Path:
    cfg.validate()
    with run_directory(out_dir) as out:
        device = resolve_device(cfg.device)
        vq = load_autoencoder(cfg.autoencoder)
        vq_state = vq.state_dict()
        digest = state_digest(vq_state)
        vcfg = vq.config
        cfg.model.latent_channels, cfg.model.grid = vcfg.code_dim, vcfg.grid
        cfg.model.validate()
        images, _ = load_images(cfg.data, "train", limit=cfg.data_limit)
        data = to_model_range(images)
        if tuple(data.shape[1:]) != (vcfg.in_channels, vcfg.image_size, vcfg.image_size):
            raise SpikediffError(f"--autoencoder {cfg.autoencoder}: made for images of shape "
                                 f"{(vcfg.in_channels, vcfg.image_size, vcfg.image_size)}, --data {cfg.data} has "
                                 f"{tuple(data.shape[1:])}")
        if len(data) < 1:
            raise SpikediffError(f"dataset {cfg.data}: no training images")
        stamp = {"autoencoder": digest, "data": cfg.data, "data_limit": cfg.data_limit, "n": len(data)}
        latents = encode_dataset(vq, data, out / "latents.pt", stamp, progress)
        mean = latents.mean(dim=(0, 2, 3))
        std = latents.std(dim=(0, 2, 3))
        z0 = ((latents - mean[None, :, None, None]) / std[None, :, None, None]).to(device)

        torch.manual_seed(cfg.seed)
        model = SpikingLatentDenoiser(cfg.model).to(device)
        schedule = NoiseSchedule(cfg.num_train_timesteps, cfg.prediction_type)
        header = {"format": FORMAT, "version": VERSION, "kind": KIND,
                  "model_config": {"vq": vcfg.to_dict(), "denoiser": cfg.model.to_dict()},
                  "diffusion": {"num_train_timesteps": cfg.num_train_timesteps,
                                "prediction_type": cfg.prediction_type},
                  "latent": {"mean": mean.tolist(), "std": std.tolist(), "snap": cfg.snap,
                             "autoencoder": cfg.autoencoder, "autoencoder_sha256": digest},
                  "autoencoder": vq_state}
        header = mark_on_grid(header, "denoiser", qat_ran(cfg, cfg.steps))

        def batch_loss(model, gen, stats):
            idx = torch.randint(0, len(z0), (cfg.batch_size,), generator=gen)
            t = torch.randint(0, cfg.num_train_timesteps, (cfg.batch_size,), generator=gen)
            noise = torch.randn((cfg.batch_size, *z0.shape[1:]), generator=gen)
            x0, t, noise = z0[idx.to(device)], t.to(device), noise.to(device)
            pred = model(schedule.add_noise(x0, noise, t), t, stats=stats)
            return torch.nn.functional.mse_loss(pred, schedule.target(x0, noise, t))

        def init_state():
            init_model, _, _ = load_model(resolve(init))
            return getattr(init_model, "denoiser", init_model).state_dict()

        options = {**cfg.options(), "autoencoder_sha256": digest}
        before_step = before_step_hook(cfg, LatentDDIM(vq, model, mean, std, cfg.snap), schedule)

        fit(Stage(model=model, header=header, options=options, resume_keys=RESUME_KEYS, batch_loss=batch_loss,
                  desc=f"latent DDIM {cfg.data}", before_step=before_step,
                  rate_norm={k: n * cfg.batch_size * cfg.model.num_steps for k, n in model.neuron_counts().items()},
                  model_options=lambda config: LatentDenoiserConfig.from_dict(config["denoiser"]).effective(),
                  init_state=None if init is None else init_state),
            cfg, out, progress, log, resume_from=resume_from)
        return out / "model.pt"
