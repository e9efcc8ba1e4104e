"""Decoder training for a latent spiking DDIM or a spiking-vq sampler (``spikediff train --model latent-decoder``).

Why a stage of its own: the spiking decoder's reconstructions are the ceiling of the sampler's FID, and the
VQ-SVAE stage trains the decoder only for a few epochs, beside an encoder and a codebook that still move. Here
the encoder and the codebook are frozen, so the latents and tokens, and the denoiser trained on them, stay
valid: only the decoder learns, on what the sampler hands it for the training set's latents (cached in
``OUT/latents.pt``): a latent DDIM's continuous latents, a spiking-vq sampler's tokens (each sampler's
``decoder_reads``), in the form each sampler deploys its decoder (``trainable_decoder``: the spiking-vq
decoder as the token decoder, its first layer the codebook folded in). ``latent_noise`` adds Gaussian noise
of that many latent standard deviations to a latent DDIM decoder's inputs, for the small errors of sampled
latents. ``qat_from`` trains it quantization-aware from that step on (``train.qat``): a float-trained
decoder's strokes break up in fixed point, the largest fixed-point loss of a latent sampler. ``adversarial``
adds a patch discriminator's verdict to the squared error from step ``adversarial_from`` on (``train.adversarial``):
squared error alone draws blurred strokes.

The stage is a ``trainer.fit`` run in ``OUT/decoder`` (resumable bit for bit, atomic checkpoints, EMA,
Ctrl-C saves). When it ends, ``OUT/model.pt`` is the ``--init`` sampler with the trained decoder. Rerunning
the command with a newer checkpoint of the same denoiser run (same encoder) only joins them again.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from .. import SpikediffError
from ..checkpoint import FORMAT, VERSION, load_model_of, load_raw, mark_on_grid, save_atomic
from ..data import load_images, to_model_range
from ..models import VQConfig
from ..models.latent_ddim import KIND, LatentDDIM
from ..models.vq_diffusion import KIND as VQ_KIND
from ..models.vq_diffusion import SpikingVQDiffusion
from .adversarial import Adversary
from .latent_trainer import encode_dataset, state_digest
from .qat import before_step_hook
from .qat import check_options as check_qat_options
from .qat import ran as qat_ran
from .trainer import Stage, check_run_options, fit, resolve_device, run_directory
from .widening import widen

STAGE_KIND = KIND + ":decoder"
TEST_IMAGES = 1000  # held-out images whose reconstruction MSE the run reports, before and after
ADVERSARIAL_FROM = 500  # steps the discriminator learns alone before the decoder feels it


@dataclass
class DecoderTrainConfig:
    data: str = "mnist"
    init: str = ""  # the latent-ddim sampler whose decoder is trained (a shipped name or a file)
    steps: int = 10000
    batch_size: int = 64
    lr: float = 5e-4
    lr_min: float = 1e-5
    decay_steps: int | None = None  # cosine decay to lr_min at this step [default: steps, if after the warm-up]
    warmup: int = 100
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    latent_noise: float = 0.0  # Gaussian noise on the decoder's input, in latent standard deviations
    decoder_channels: int | None = None  # another width for the decoder (``resize_decoder``) [default: --init's]
    qat_from: int | None = None  # quantization-aware training from this step on (``train.qat``)
    qat_refresh: int = 50  # steps between refreshes of the fixed-point scales
    adversarial: float | None = None  # weight of the discriminator's verdict in the loss (``train.adversarial``)
    adversarial_from: int | None = None  # the decoder feels it from this step on [default: ADVERSARIAL_FROM]
    seed: int = 0
    data_limit: int | None = None
    checkpoint_every: int = 250
    log_every: int = 25
    device: str = "auto"

    def validate(self) -> DecoderTrainConfig:
        if self.decay_steps is None and self.steps > self.warmup:
            self.decay_steps = self.steps  # by default the rate decays over the whole run
        check_run_options(self)
        check_qat_options(self)
        if not 0 <= self.latent_noise <= 10:
            raise SpikediffError(f"--latent-noise must be in [0, 10] latent standard deviations, got "
                                 f"{self.latent_noise}")
        if self.adversarial is None and self.adversarial_from is not None:
            raise SpikediffError("--adversarial-from needs --adversarial (the weight of the discriminator's verdict)")
        if self.adversarial is not None:
            if not 0 < self.adversarial <= 100:
                raise SpikediffError(f"--adversarial must be in (0, 100], got {self.adversarial}")
            if self.adversarial_from is None:
                self.adversarial_from = ADVERSARIAL_FROM
            if self.adversarial_from < 0:
                raise SpikediffError(f"--adversarial-from must be a step >= 0, got {self.adversarial_from}")
        if self.decoder_channels is not None and self.decoder_channels < 1:
            raise SpikediffError(f"--decoder-channels must be a positive integer, got {self.decoder_channels}")
        return self

    def options(self) -> dict:
        return asdict(self)


RESUME_KEYS = ("data", "batch_size", "lr", "lr_min", "decay_steps", "seed", "latent_noise", "data_limit",
               "adversarial", "adversarial_from", "encoder_sha256")


def _with_decoder(state: dict, decoder_state: dict) -> dict:
    """An autoencoder's state dict with its decoder's entries replaced (all of them: a new width has new shapes)."""
    kept = {k: v for k, v in state.items() if not k.startswith("decoder.")}
    return {**kept, **{f"decoder.{k}": v for k, v in decoder_state.items()}}


def _with_config(raw: dict, vq_config: VQConfig) -> dict:
    return {**raw, "model_config": {**raw["model_config"], "vq": vq_config.to_dict()}}


def _join_latent(raw: dict, decoder_state: dict, info: dict, vq_config: VQConfig) -> dict:
    raw = _with_config(raw, vq_config)
    return {**raw, "autoencoder": _with_decoder(raw["autoencoder"], decoder_state),
            "latent": {**raw["latent"], "decoder": info}}


def _join_vq(raw: dict, decoder_state: dict, info: dict, vq_config: VQConfig) -> dict:
    raw = _with_config(raw, vq_config)
    vq = _with_decoder(raw["model"]["vq"], decoder_state)
    return {**raw, "model": {**raw["model"], "vq": vq}, "train": {**raw["train"], "decoder": info}}


def resize_decoder(sampler, channels: int | None, seed: int = 0) -> VQConfig:
    """Give ``sampler`` a decoder of ``channels`` width where that differs from its own; returns the
    autoencoder's config with the decoder's width. Why: the decoder is the ceiling of the sampler's FID, and a
    wider one is the way past it; the encoder, codebook and denoiser stay as they are. A wider decoder starts
    as the old one (``widen``: same function, the new neurons silent towards the old ones and the readout); a
    narrower one starts untrained."""
    from ..models.spiking_vq import SpikingDecoder

    vq = sampler.vq
    if channels is None or channels == vq.config.decoder_width:
        return vq.config
    config = replace(vq.config, decoder_channels=channels).validate()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        decoder = SpikingDecoder(config).to(vq.quantizer.codebook.weight)
    if channels > vq.config.decoder_width:
        widen(vq.decoder, decoder)
    vq.decoder, vq.config = decoder.requires_grad_(False), config
    return config


# sampler class -> (the stage's checkpoint kind, how its checkpoint takes the trained decoder)
SAMPLERS = {LatentDDIM: (STAGE_KIND, _join_latent), SpikingVQDiffusion: (VQ_KIND + ":decoder", _join_vq)}


def load_sampler(name: str) -> tuple:
    """(sampler, its checkpoint dict, its path) of ``--init``; anything else is refused in one line."""
    return load_model_of(name, tuple(SAMPLERS), "--init", "a latent-ddim or spiking-vq sampler (the decoder "
                         "stage trains the decoder of one)")


@torch.no_grad()
def reconstruction_mse(model, images: torch.Tensor) -> float:
    """Mean squared error of the spiking decoder's reconstructions from what the sampler hands it for the
    encoder's latents (``decoder_reads``), in the form the stage trains it."""
    net = model.trainable_decoder()
    return float(sum(((net(net.host_input(model.decoder_reads(model.vq.encoder(x)))).clamp(-1, 1) - x) ** 2).sum()
                     for x in images.split(250)) / images.numel())


def train_latent_decoder(cfg: DecoderTrainConfig, out_dir: str | Path, progress: bool = True, log=print,
                         resume_from: Path | None = None) -> Path:
    """Train ``cfg.init``'s decoder in ``out_dir``; ``resume_from``: the compact ``decoder/resume.pt`` of a run
    of the same ``--init`` and options, continued in an empty ``out_dir`` (e.g. on another machine)."""
    cfg.validate()
    with run_directory(out_dir) as out:
        device = resolve_device(cfg.device)
        sampler, raw, init_path = load_sampler(cfg.init)
        stage_kind, join = SAMPLERS[type(sampler)]
        if cfg.latent_noise and not isinstance(sampler, LatentDDIM):
            raise SpikediffError(f"--latent-noise: --init {cfg.init} is a spiking-vq sampler, whose decoder reads "
                                 f"tokens, which take no noise")
        sampler.requires_grad_(False)
        vq = sampler.vq
        encoder_digest = state_digest(vq.encoder.state_dict())
        images, _ = load_images(cfg.data, "train", limit=cfg.data_limit)
        data = to_model_range(images)
        if tuple(data.shape[1:]) != sampler.image_shape:
            raise SpikediffError(f"--init {cfg.init}: made for images of shape {sampler.image_shape}, --data "
                                 f"{cfg.data} has {tuple(data.shape[1:])}")
        stamp = {"encoder": encoder_digest, "data": cfg.data, "data_limit": cfg.data_limit, "n": len(data)}
        latents = encode_dataset(vq, data, out / "latents.pt", stamp, progress)
        with torch.no_grad():
            latents = torch.cat([sampler.decoder_reads(z) for z in latents.split(2000)])
        std = getattr(sampler, "latent_std", torch.ones(1)).reshape(1, -1, 1, 1)
        test = to_model_range(load_images(cfg.data, "test", limit=TEST_IMAGES)[0])
        mse_before = reconstruction_mse(sampler, test)  # of --init's decoder
        vcfg = resize_decoder(sampler, cfg.decoder_channels, cfg.seed)

        sampler.to(device)
        decoder = sampler.trainable_decoder().requires_grad_(True).train()  # shares the sampler's decoder
        x_all, z_all, std = data.to(device), latents.to(device), std.to(device)

        adversary = None if cfg.adversarial is None else Adversary(
            data.shape[1], cfg.adversarial, cfg.adversarial_from, cfg.lr, cfg.seed, device)

        def batch_loss(model, gen, stats):
            idx = torch.randint(0, len(z_all), (cfg.batch_size,), generator=gen)
            z = z_all[idx.to(device)]
            if cfg.latent_noise:
                z = z + cfg.latent_noise * std * torch.randn(z.shape, generator=gen).to(device)
            fake, real = model(model.host_input(z), stats), x_all[idx.to(device)]
            loss = torch.nn.functional.mse_loss(fake, real)
            return loss if adversary is None else adversary.loss(loss, fake, real, stats)

        header = {"format": FORMAT, "version": VERSION, "kind": stage_kind, "model_config": vcfg.to_dict(),
                  "diffusion": raw["diffusion"]}
        stage_dir = out / "decoder"
        stage_dir.mkdir(exist_ok=True)
        before_step = before_step_hook(cfg, sampler, role="decoder", net=decoder)

        fit(Stage(model=decoder, header=header, options={**cfg.options(), "encoder_sha256": encoder_digest},
                  resume_keys=RESUME_KEYS, batch_loss=batch_loss, desc=f"decoder {cfg.data}",
                  loss_name="reconstruction MSE" if adversary is None else "reconstruction MSE + adversarial",
                  before_step=before_step, companion=adversary,
                  rate_norm={k: n * cfg.batch_size * vcfg.num_steps for k, n in decoder.neuron_counts().items()},
                  model_options=lambda config: VQConfig.from_dict(config).effective()),
            cfg, stage_dir, progress, log, resume_from=resume_from)

        trained = load_raw(stage_dir / "model.pt")
        decoder.load_state_dict(trained["model"])
        decoder.qat_scales = None  # the sampler deploys the float weights; export quantizes them
        decoder.eval().requires_grad_(False)
        mse_after = reconstruction_mse(sampler.cpu(), test)
        log(f"decoder: reconstruction MSE of the first {len(test)} {cfg.data} test images {mse_before:.5f} -> "
            f"{mse_after:.5f} (step {trained['train']['step']})")
        info = {"init": str(init_path), "run": str(stage_dir), "step": trained["train"]["step"],
                "channels": vcfg.decoder_width,
                "latent_noise": cfg.latent_noise, "qat_from": cfg.qat_from, "adversarial": cfg.adversarial,
                "adversarial_from": cfg.adversarial_from, "test_mse_before": mse_before,
                "test_mse_after": mse_after}
        joined = join(raw, {k: v.cpu() for k, v in trained["model"].items()}, info, vcfg)
        save_atomic(mark_on_grid(joined, "decoder", qat_ran(cfg, trained["train"]["step"])), out / "model.pt")
        return out / "model.pt"
