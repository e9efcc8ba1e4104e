"""Checkpoint files: written atomically, validated on load with errors that name the file and the problem."""

from __future__ import annotations

from pathlib import Path

import torch

from . import SpikediffError
from .atomic import atomic_path

FORMAT = "spikediff-checkpoint"
VERSION = 1
_ASSETS = Path(__file__).parent / "assets"
#: checkpoints shipped in the package (usable as CKPT on the command line): the FSDDIM-style denoisers by the
#: dataset they were trained on, the Spiking-Diffusion (spiking-vq) samplers as "<dataset>-vq"
SHIPPED_MODELS = {"mnist": _ASSETS / "fsddim_mnist_small.pt", "fashion-mnist": _ASSETS / "fsddim_fashion_small.pt",
                  "mnist-vq": _ASSETS / "spiking_vq_mnist.pt", "fashion-mnist-vq": _ASSETS / "spiking_vq_fashion.pt"}
SHIPPED = SHIPPED_MODELS["mnist"]  # the default model


class CheckpointError(SpikediffError):
    pass


def save_atomic(obj: dict, path: str | Path) -> Path:
    """torch.save to a temporary file beside `path`, then rename: a crash never leaves a half-written file."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def load_raw(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path}: no such file")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path}: is a directory (pass the .pt file, e.g. {path}/model.pt)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path}: not a readable PyTorch file ({type(exc).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path}: not a spikediff checkpoint")
    if ckpt.get("version") != VERSION:
        raise CheckpointError(f"checkpoint {path}: format version {ckpt.get('version')}, this spikediff reads {VERSION}")
    for key in ("model_config", "diffusion", "model"):
        if key not in ckpt:
            raise CheckpointError(f"checkpoint {path}: missing entry {key!r}")
    return ckpt


def resolve(path: str | Path | None) -> Path:
    """The file behind a CKPT argument: a path that exists wins over a shipped model's name; None is mnist."""
    if path is None:
        return SHIPPED
    if str(path) in SHIPPED_MODELS and not Path(path).exists():
        return SHIPPED_MODELS[str(path)]
    return Path(path)


def load_model(path: str | Path | None = None, weights: str = "ema"):
    """(model, noise schedule, checkpoint dict) from model.pt or last.pt; the shipped one if path is None.

    weights="raw" takes a last.pt's un-averaged weights instead of the EMA. A ``spiking-vq`` checkpoint
    gives a ``SpikingVQDiffusion`` and no noise schedule (its mask schedule is an attribute of the model).
    """
    from .diffusion import NoiseSchedule
    from .models import DenoiserConfig, SpikingDenoiser

    path = resolve(path)
    ckpt = load_raw(path)
    kind = ckpt.get("kind")
    if kind is not None and kind.startswith("latent-ddim"):
        return _load_latent(path, ckpt, weights), NoiseSchedule(**ckpt["diffusion"]), ckpt
    if kind is not None:
        return _load_vq(path, ckpt, kind), None, ckpt
    try:
        model = SpikingDenoiser(DenoiserConfig.from_dict(ckpt["model_config"]))
    except TypeError as exc:
        raise CheckpointError(f"checkpoint {path}: bad model_config ({exc})") from None
    # model.pt holds EMA weights as "model"; a run's last.pt also holds the raw weights beside them.
    state = ckpt["ema_full"]["module"] if weights == "ema" and "ema_full" in ckpt else ckpt["model"]
    _load_state(path, model, state)
    schedule = NoiseSchedule(**ckpt["diffusion"])
    return model.eval(), schedule, ckpt


def _load_state(path: Path, model, state) -> None:
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, KeyError) as exc:
        first = str(exc).splitlines()[0]
        raise CheckpointError(f"checkpoint {path}: weights do not fit the model ({first})") from None


def _load_vq(path: Path, ckpt: dict, kind: str):
    from .models import SpikingTokenDenoiser, SpikingVQDiffusion, SpikingVQVAE, TokenDenoiserConfig, VQConfig
    from .models.vq_diffusion import KIND

    if kind != KIND:
        stage = kind.split(":")[-1]
        hint = (f"; sample from the run's model.pt ({path.parent.parent / 'model.pt'})" if kind.startswith(KIND + ":")
                else "")
        raise CheckpointError(f"checkpoint {path}: a {stage!r} checkpoint, not a sampler{hint}")
    cfg, state = ckpt["model_config"], ckpt["model"]
    if not isinstance(cfg, dict) or not isinstance(state, dict) or not {"vq", "sdid"} <= set(cfg) & set(state):
        raise CheckpointError(f"checkpoint {path}: a {KIND} checkpoint needs 'vq' and 'sdid' configs and weights")
    try:
        vq = SpikingVQVAE(VQConfig.from_dict(cfg["vq"]))
        sdid = SpikingTokenDenoiser(TokenDenoiserConfig.from_dict(cfg["sdid"]))
    except TypeError as exc:
        raise CheckpointError(f"checkpoint {path}: bad model_config ({exc})") from None
    _load_state(path, vq, state["vq"])
    _load_state(path, sdid, state["sdid"])
    return SpikingVQDiffusion(vq, sdid, ckpt["diffusion"].get("mask_schedule", "cosine")).eval()


def _load_latent(path: Path, ckpt: dict, weights: str):
    from .models import SpikingVQVAE, VQConfig
    from .models.latent_ddim import LatentDDIM
    from .models.latent_denoiser import LatentDenoiserConfig, SpikingLatentDenoiser

    cfg, latent = ckpt["model_config"], ckpt.get("latent")
    if not isinstance(cfg, dict) or not {"vq", "denoiser"} <= set(cfg) or not isinstance(latent, dict) \
            or "autoencoder" not in ckpt:
        raise CheckpointError(f"checkpoint {path}: a latent-ddim checkpoint needs 'vq' and 'denoiser' configs, "
                              f"'latent' statistics and the 'autoencoder' weights")
    try:
        vq = SpikingVQVAE(VQConfig.from_dict(cfg["vq"]))
        denoiser = SpikingLatentDenoiser(LatentDenoiserConfig.from_dict(cfg["denoiser"]))
    except TypeError as exc:
        raise CheckpointError(f"checkpoint {path}: bad model_config ({exc})") from None
    _load_state(path, vq, ckpt["autoencoder"])
    state = ckpt["ema_full"]["module"] if weights == "ema" and "ema_full" in ckpt else ckpt["model"]
    if "ema_half" in ckpt:  # a compact resume file
        state = {k: v.float() if v.is_floating_point() else v for k, v in
                 (ckpt["ema_half"] if weights == "ema" else ckpt["model"]).items()}
    _load_state(path, denoiser, state)
    return LatentDDIM(vq, denoiser, latent["mean"], latent["std"], latent.get("snap", False)).eval()
