"""Two-stage training of the Spiking-Diffusion model (``spikediff train --model spiking-vq``).

Stage 1 trains the VQ-SVAE in ``OUT/vq`` (reconstruction MSE + codebook + commitment losses, dead codes
restarted during the first three quarters). Its EMA weights then encode the training set once into token
grids (``OUT/tokens.pt``, cached). Stage 2 trains the SDID denoiser on them in ``OUT/sdid`` (cross-entropy on
masked cells). ``OUT/model.pt`` joins the two: the checkpoint to sample, evaluate and ship. Each stage is a
``trainer.fit`` run: resumable bit for bit, atomic checkpoints, EMA, Ctrl-C saves; rerunning the command
resumes wherever it stopped.

With ``init`` (a spiking-vq sampler) there is no VQ stage: the sampler's VQ-SVAE is kept as it is (decoder
included), its tokens encode the training set, and its SDID is the starting point of the SDID stage, whose
``qat_from`` trains it quantization-aware (``train.qat``): the fine-tuning that makes fixed point cost less,
since one changed logit changes a token draw and the sample diverges from there. ``sdid_channels`` and
``sdid_hidden`` widen that SDID first (``widening.widen``: it starts as the init's, the added neurons silent
towards the old ones): an SDID whose loss has stopped falling at its width grows on the same frozen tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .. import SpikediffError
from ..checkpoint import FORMAT, VERSION, load_model_of, load_raw, mark_on_grid, save_atomic
from ..data import load_images, to_model_range
from ..data.datasets import image_size as dataset_image_size
from ..diffusion.absorbing import MASK_SCHEDULES, corrupt, masked_cross_entropy
from ..models import SpikingTokenDenoiser, SpikingVQVAE, TokenDenoiserConfig, VQConfig
from ..models.vq_diffusion import KIND, SpikingVQDiffusion
from .latent_trainer import state_digest
from .qat import before_step_hook
from .qat import check_options as check_qat_options
from .qat import ran as qat_ran
from .trainer import Stage, check_run_options, fit, resolve_device, run_directory
from .widening import widen


@dataclass
class VQTrainConfig:
    data: str = "mnist"
    vq_steps: int = 3000  # stage 1
    vq_decay_steps: int | None = None  # the VQ stage's cosine decay to lr_min at this step (None: constant)
    steps: int = 4000  # stage 2 (SDID)
    batch_size: int = 64
    lr: float = 1e-3
    lr_min: float = 1e-4
    decay_steps: int | None = None  # the SDID stage's cosine decay to lr_min at this step (None: constant)
    warmup: int = 200
    grad_clip: float = 1.0
    vq_ema_decay: float = 0.99  # short: the codebook moves in jumps while dead codes restart
    ema_decay: float = 0.999
    restart_every: int = 100
    mask_schedule: str = "cosine"
    init: str | None = None  # a spiking-vq sampler: keep its VQ-SVAE, fine-tune its SDID (no VQ stage)
    qat_from: int | None = None  # the SDID quantization-aware from this step on (``train.qat``)
    qat_refresh: int = 50  # steps between refreshes of the fixed-point scales
    sdid_channels: int | None = None  # with init: its SDID's grid layers widened to this [default: as they are]
    sdid_hidden: int | None = None  # with init: its SDID's dense layer widened to this [default: as it is]
    sdid_feedback: bool | None = None  # with init, True: its SDID's dense layer drives its grid layer too (silent at
    # first) [default: as it is]
    seed: int = 0
    data_limit: int | None = None
    checkpoint_every: int = 250
    log_every: int = 25
    device: str = "auto"
    vq: VQConfig = field(default_factory=VQConfig)
    sdid: TokenDenoiserConfig = field(default_factory=TokenDenoiserConfig)

    def validate(self) -> VQTrainConfig:
        check_run_options(self, counts=("vq_steps", "restart_every"), decays=("ema_decay", "vq_ema_decay"),
                          lr_decays=("decay_steps", "vq_decay_steps"))
        if self.vq_decay_steps is not None and self.init is not None:
            raise SpikediffError("--vq-decay-steps decays the VQ-SVAE stage's learning rate; an --init run has no "
                                 "VQ-SVAE stage")
        if self.mask_schedule not in MASK_SCHEDULES:
            raise SpikediffError(f"--mask-schedule {self.mask_schedule!r}: choose one of {', '.join(MASK_SCHEDULES)}")
        check_qat_options(self)
        widths = {k: getattr(self, k) for k in ("sdid_channels", "sdid_hidden") if getattr(self, k) is not None}
        if widths and self.init is None:
            raise SpikediffError(f"{', '.join(widths)}: these widen the SDID of an init sampler; without init, set "
                                 f"the SDID's width in sdid")
        if self.sdid_feedback and self.init is None:
            raise SpikediffError("sdid_feedback adds feedback to the SDID of an init sampler; without init, set "
                                 "feedback in sdid")
        if any(v < 1 for v in widths.values()):
            raise SpikediffError(f"{widths}: widths must be positive")
        self.vq.validate()
        self.sdid.validate()
        return self

    def options(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in ("vq", "sdid")}


RESUME_KEYS = ("data", "batch_size", "lr", "seed", "data_limit")
VQ_RESUME_KEYS = ("vq_decay_steps",)
SDID_RESUME_KEYS = ("vq_steps", "vq_decay_steps", "vq_sha256", "mask_schedule", "decay_steps", "sdid_channels", "sdid_hidden",
                    "sdid_feedback")


def header(cfg: VQTrainConfig) -> dict:
    return {"format": FORMAT, "version": VERSION, "kind": KIND,
            "model_config": {"vq": cfg.vq.to_dict(), "sdid": cfg.sdid.to_dict()},
            "diffusion": {"mask_schedule": cfg.mask_schedule}}


def load_init(name: str) -> tuple:
    """(SpikingVQDiffusion, its checkpoint dict) of ``--init``; anything else is refused in one line."""
    model, raw, _path = load_model_of(name, (SpikingVQDiffusion,), "--init", "a spiking-vq sampler (--model "
                                      "spiking-vq --init fine-tunes the SDID of one)")
    return model, raw


def train_spiking_vq(cfg: VQTrainConfig, out_dir: str | Path, progress: bool = True, log=print,
                     resume_from: Path | None = None) -> Path:
    """Both stages into ``out_dir`` (resuming what is there), or with ``cfg.init`` the SDID stage alone on the
    sampler's VQ-SVAE; returns the joined ``model.pt``. ``resume_from``, continued in an empty ``out_dir``
    (e.g. on another machine): with ``cfg.init``, the compact ``sdid/resume.pt`` of a run of the same init and
    options; without, either compact file of a two-stage run of the same options: ``vq/resume.pt`` continues
    its VQ stage (the SDID stage then starts as usual), ``sdid/resume.pt`` its SDID stage on the finished
    VQ-SVAE that file carries."""
    cfg.validate()
    vq_resume = sdid_resume = None
    if resume_from is not None:
        moved = cfg.init is None and str(load_raw(resume_from).get("kind", "")).endswith(":vq")
        vq_resume, sdid_resume = (resume_from, None) if moved else (None, resume_from)
    init = load_init(cfg.init) if cfg.init is not None else None
    with run_directory(out_dir) as out:
        device = resolve_device(cfg.device)
        size = dataset_image_size(cfg.data)
        if init is not None:  # the sampler's networks and mask schedule, whatever the options said
            cfg.vq, cfg.mask_schedule = init[0].vq.config, init[0].mask_schedule
            cfg.sdid = widened_config(init[0].sdid.config, cfg)
            if cfg.vq.image_size != size:
                raise SpikediffError(f"--init {cfg.init}: made for {cfg.vq.image_size}x{cfg.vq.image_size} images, "
                                     f"--data {cfg.data} has {size}x{size}")
        cfg.vq = replace(cfg.vq, image_size=size).validate()
        cfg.sdid = replace(cfg.sdid, codebook_size=cfg.vq.codebook_size, grid=cfg.vq.grid).validate()
        images, _ = load_images(cfg.data, "train", limit=cfg.data_limit)
        data = to_model_range(images).to(device)
        if len(data) < 1:
            raise SpikediffError(f"dataset {cfg.data}: no training images")

        if init is None:
            if sdid_resume is not None:
                _carry_vq(cfg, sdid_resume, out / "vq")
            vq = _train_vq(cfg, data, out / "vq", device, progress, log, resume_from=vq_resume)
            done_vq = load_raw(out / "vq" / "model.pt")["train"]
            stamp = {"vq_steps": cfg.vq_steps}
        else:
            vq = init[0].vq.to(device).eval().requires_grad_(False)
            done_vq = {"step": init[1]["train"].get("vq_step"), "loss": init[1]["train"].get("vq_loss")}
            stamp = {"vq_sha256": state_digest(vq.state_dict())}
        tokens = _tokens(cfg, vq, data, out / "tokens.pt", progress, stamp)
        sdid = _train_sdid(cfg, tokens, out / "sdid", device, progress, log, vq,
                           init_state=None if init is None else lambda: widened_state(init[0].sdid, cfg.sdid, cfg.seed),
                           vq_sha256=stamp.get("vq_sha256"), resume_from=sdid_resume,
                           carry=None if init is not None else {"model_config": cfg.vq.to_dict(),
                                                                "model": vq.state_dict(), "train": done_vq})
        done = load_raw(out / "sdid" / "model.pt")["train"]
        extra = {} if init is None else {"init": str(cfg.init), "init_train": init[1]["train"]}
        result = {**header(cfg), "model": {"vq": vq.state_dict(), "sdid": sdid.state_dict()},
                  "train": {**cfg.options(), **extra, "vq_step": done_vq["step"], "step": done["step"],
                            "vq_loss": done_vq["loss"], "loss": done["loss"]}}
        if init is not None:  # the init's decoder, and whether it was trained quantization-aware, are kept
            result = mark_on_grid(result, "decoder", "decoder" in getattr(init[0], "trained_on_grid", ()))
        save_atomic(mark_on_grid(result, "denoiser", qat_ran(cfg, done["step"])), out / "model.pt")
        return out / "model.pt"


def widened_config(config: TokenDenoiserConfig, cfg: VQTrainConfig) -> TokenDenoiserConfig:
    """The init's SDID config with ``cfg``'s ``sdid_channels`` and ``sdid_hidden`` (and feedback, with
    ``sdid_feedback``); narrower is refused (a trained SDID is only grown)."""
    wanted = {"channels": cfg.sdid_channels, "hidden": cfg.sdid_hidden}
    for field_name, width in wanted.items():
        if width is not None and width < getattr(config, field_name):
            option = "--sdid-channels" if field_name == "channels" else "--hidden"
            raise SpikediffError(f"{option} {width}: narrower than the SDID of --init {cfg.init} "
                                 f"({getattr(config, field_name)}); a trained SDID can only be widened")
    grown = {k: v for k, v in wanted.items() if v is not None}
    if cfg.sdid_feedback:
        grown["feedback"] = True
    return replace(config, **grown).validate()


def widened_state(sdid: SpikingTokenDenoiser, config: TokenDenoiserConfig, seed: int) -> dict:
    """``sdid``'s weights, or, for a wider ``config``, those of an SDID of that width that computes the same
    logits (its added neurons start from a seeded random draw)."""
    if config == sdid.config:
        return sdid.state_dict()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        wide = SpikingTokenDenoiser(config).to(next(sdid.parameters()))
    widen(sdid, wide)
    return wide.state_dict()


def _ema_weights(model: torch.nn.Module, path: Path) -> torch.nn.Module:
    model.load_state_dict(load_raw(path)["model"])
    return model.eval().requires_grad_(False)


def _carry_vq(cfg: VQTrainConfig, path: Path, out: Path) -> None:
    """The finished VQ-SVAE that a two-stage run's compact SDID file carries, written as the VQ stage's
    ``model.pt`` in ``out`` (marked as carried, so that the same command in the same directory trains no VQ
    stage again); refused in one line if the file carries none or another configuration."""
    carried = load_raw(path).get("vq_svae")
    if not isinstance(carried, dict) or not {"model_config", "model", "train"} <= set(carried):
        raise SpikediffError(f"--resume-from {path}: carries no VQ-SVAE (an --init run's SDID file continues with "
                             f"its --init; a two-stage run's from an older spikediff, in its own --out)")
    if carried["model_config"] != cfg.vq.to_dict():
        differ = sorted(k for k in set(carried["model_config"]) | set(cfg.vq.to_dict())
                        if carried["model_config"].get(k) != cfg.vq.to_dict().get(k))
        raise SpikediffError(f"--resume-from {path}: its VQ-SVAE differs from this command's in "
                             f"{', '.join(differ)}; use the run's options")
    out.mkdir(exist_ok=True)
    if not (out / "last.pt").exists():
        save_atomic({**header(cfg), "kind": KIND + ":vq", "model_config": carried["model_config"],
                     "model": carried["model"], "train": {**carried["train"], "carried_from": str(path)}},
                    out / "model.pt")


def _train_vq(cfg: VQTrainConfig, data: torch.Tensor, out: Path, device, progress, log,
              resume_from: Path | None = None) -> SpikingVQVAE:
    out.mkdir(exist_ok=True)
    if not (out / "last.pt").exists() and (out / "model.pt").exists():
        carried = load_raw(out / "model.pt")["train"].get("carried_from")
        if carried is not None:  # the stage was finished elsewhere and came with a compact SDID file
            log(f"the VQ-SVAE stage came finished with {carried}")
            return _ema_weights(SpikingVQVAE(cfg.vq).to(device), out / "model.pt")
    torch.manual_seed(cfg.seed)
    model = SpikingVQVAE(cfg.vq).to(device)
    last_batch = {}

    def batch_loss(model, gen, stats):
        idx = torch.randint(0, len(data), (cfg.batch_size,), generator=gen)
        x = data[idx.to(device)]
        recon, codes, cb, commit, z = model(x, stats)
        last_batch.update(z=z, codes=codes)
        mse = F.mse_loss(recon, x)
        if stats is not None:
            stats["recon_mse"] = float(mse.detach())
            stats["codes_used"] = float(len(torch.unique(codes)))
        return mse + cb + cfg.vq.commitment * commit

    def on_step(model, step, gen):
        if step % cfg.restart_every == 0 and step < 0.75 * cfg.vq_steps:
            model.quantizer.restart_dead(last_batch["z"], last_batch["codes"], gen)

    neurons = {**model.encoder.neuron_counts(), **model.decoder.neuron_counts()}
    stage_cfg = replace(cfg, steps=cfg.vq_steps, ema_decay=cfg.vq_ema_decay, decay_steps=cfg.vq_decay_steps)
    fit(Stage(model=model, header={**header(cfg), "kind": KIND + ":vq", "model_config": cfg.vq.to_dict()},
              options={**cfg.options(), "stage": "vq"}, resume_keys=RESUME_KEYS + VQ_RESUME_KEYS, batch_loss=batch_loss,
              desc=f"VQ-SVAE {cfg.data}", on_step=on_step, loss_name="MSE + codebook + commitment",
              rate_norm={k: n * cfg.batch_size * cfg.vq.num_steps for k, n in neurons.items()}),
        stage_cfg, out, progress, log, resume_from=resume_from)
    return _ema_weights(SpikingVQVAE(cfg.vq).to(device), out / "model.pt")


@torch.no_grad()
def _tokens(cfg: VQTrainConfig, vq: SpikingVQVAE, data: torch.Tensor, path: Path, progress, vq_stamp: dict
            ) -> torch.Tensor:
    """The training set as token grids under the trained VQ-SVAE, cached (keyed by the VQ stage's step, or
    the weights of an ``--init`` sampler's VQ-SVAE)."""
    stamp = {**vq_stamp, "data": cfg.data, "data_limit": cfg.data_limit, "n": len(data)}
    if path.exists():
        cached = torch.load(path, weights_only=True)
        if cached.get("stamp") == stamp:
            return cached["tokens"]
    parts = []
    for start in tqdm(range(0, len(data), 500), desc="encoding the training set", unit="batch", disable=not progress):
        parts.append(vq.encode(data[start:start + 500]).to(torch.int16).cpu())
    tokens = torch.cat(parts)
    save_atomic({"stamp": stamp, "tokens": tokens}, path)
    return tokens


def _train_sdid(cfg: VQTrainConfig, tokens: torch.Tensor, out: Path, device, progress, log, vq: SpikingVQVAE,
                init_state: Callable[[], dict] | None = None, vq_sha256: str | None = None,
                resume_from: Path | None = None, carry: dict | None = None) -> SpikingTokenDenoiser:
    """``carry``: a two-stage run's finished VQ-SVAE (config, float32 EMA weights, its stage's record), in
    every file of the stage, so that its compact file alone continues the run elsewhere."""
    out.mkdir(exist_ok=True)
    torch.manual_seed(cfg.seed)
    model = SpikingTokenDenoiser(cfg.sdid).to(device)
    tokens = tokens.long().to(device)

    def batch_loss(model, gen, stats):
        idx = torch.randint(0, len(tokens), (cfg.batch_size,), generator=gen)
        tok = tokens[idx.to(device)]
        masked, mask, ratio = corrupt(tok, model.mask_id, gen, cfg.mask_schedule)
        logits = model(masked, ratio, stats)
        loss = masked_cross_entropy(logits, tok, mask)
        if stats is not None:
            stats["masked_accuracy"] = float(((logits.argmax(1) == tok) & mask).sum() / mask.sum())
        return loss

    before_step = before_step_hook(cfg, SpikingVQDiffusion(vq, model, cfg.mask_schedule))
    carried = {} if carry is None else {"vq_svae": {**carry, "model": {k: v.cpu() for k, v in carry["model"].items()}}}
    fit(Stage(model=model, header={**header(cfg), "kind": KIND + ":sdid", "model_config": cfg.sdid.to_dict(),
                                   **carried},
              options={**cfg.options(), "stage": "sdid", "vq_sha256": vq_sha256},
              resume_keys=RESUME_KEYS + SDID_RESUME_KEYS, batch_loss=batch_loss, desc=f"SDID {cfg.data}",
              loss_name="cross-entropy on masked tokens", init_state=init_state, before_step=before_step,
              rate_norm={k: n * cfg.batch_size * cfg.sdid.num_steps for k, n in model.neuron_counts().items()}),
        cfg, out, progress, log, resume_from=resume_from)
    return _ema_weights(SpikingTokenDenoiser(cfg.sdid).to(device), out / "model.pt")
