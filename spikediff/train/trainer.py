"""DDPM training loop: resumable, atomic checkpoints, EMA weights, deterministic for a given seed.

A run directory holds ``last.pt`` (everything needed to resume, bit for bit), ``model.pt`` (EMA weights
only: the small file to sample, export and ship), ``log.jsonl`` (loss and firing rates over time) and
``training.png`` (the same as curves).
Running the same command again on the same directory resumes; a larger ``--steps`` extends the run.
The learning rate is constant after warm-up, so a run stopped at step N equals a run asked for N steps.
"""

from __future__ import annotations

import copy
import fcntl
import json
import math
import os
import signal
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from .. import SpikediffError
from ..checkpoint import FORMAT, VERSION, load_raw, save_atomic
from ..data import load_images, to_model_range
from ..data.datasets import image_size as dataset_image_size
from ..diffusion import NoiseSchedule
from ..models import DenoiserConfig, SpikingDenoiser
from .plots import plot_training_log


@dataclass
class TrainConfig:
    data: str = "mnist"
    steps: int = 4000
    batch_size: int = 128
    lr: float = 1e-3
    warmup: int = 200
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    # v-prediction: near pure noise the target is about -x0 (structure), and where it is about the noise
    # (low t) its errors are damped by sqrt(1 - abar) in x0. A spiking readout has little precision, so it
    # should not have to output white noise where 1/sqrt(abar) amplifies the error (epsilon at high t).
    prediction_type: str = "v_prediction"
    num_train_timesteps: int = 1000
    seed: int = 0
    data_limit: int | None = None
    checkpoint_every: int = 250
    log_every: int = 25
    device: str = "auto"
    model: DenoiserConfig = field(default_factory=DenoiserConfig)

    def validate(self) -> "TrainConfig":
        for name in ("steps", "batch_size", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise SpikediffError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.lr < 1:
            raise SpikediffError(f"--lr must be in (0, 1), got {self.lr}")
        if not 0 <= self.ema_decay < 1:
            raise SpikediffError(f"--ema-decay must be in [0, 1), got {self.ema_decay}")
        self.model.validate()
        return self


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SpikediffError(f"--device {name}: CUDA is not available on this machine")
    try:
        return torch.device(name)
    except RuntimeError:
        raise SpikediffError(f"--device {name!r}: not a device name (use auto, cpu or cuda)") from None


class EMA:
    """Exponential moving average of the parameters and batch-norm statistics (no other buffers: snnTorch's
    are constants or state).

    torch's AveragedModel also copies buffers, which fails on snnTorch's shape-changing membrane buffer.
    Warm-up (1 + n) / (10 + n) keeps short runs from being dominated by the random init.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay
        self.num_updates = 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        d = min(self.decay, (1.0 + self.num_updates) / (10.0 + self.num_updates))
        torch._foreach_lerp_(list(self.module.parameters()), list(model.parameters()), 1.0 - d)
        for mine, theirs in zip(self.module.modules(), model.modules()):  # batch norm statistics: averaged too
            if isinstance(mine, torch.nn.modules.batchnorm._BatchNorm):
                mine.running_mean.lerp_(theirs.running_mean, 1.0 - d)
                mine.running_var.lerp_(theirs.running_var, 1.0 - d)
                mine.num_batches_tracked.copy_(theirs.num_batches_tracked)
        self.num_updates += 1

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "num_updates": self.num_updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.num_updates = state["num_updates"]


def _signals_raise_interrupt():
    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        return None


def _header(cfg: TrainConfig) -> dict:
    """What every checkpoint carries to rebuild the model and its noise schedule."""
    return {"format": FORMAT, "version": VERSION, "model_config": cfg.model.to_dict(),
            "diffusion": {"num_train_timesteps": cfg.num_train_timesteps, "prediction_type": cfg.prediction_type}}


def _train_options(cfg: TrainConfig) -> dict:
    return {k: v for k, v in asdict(cfg).items() if k != "model"}


def train(cfg: TrainConfig, out_dir: str | Path, progress: bool = True, log=print) -> Path:
    """Train (or resume) into out_dir; returns the path of the small EMA checkpoint.

    Ctrl-C (SIGINT) and SIGTERM save the current step before exiting.
    """
    cfg.validate()
    with run_directory(out_dir) as out:
        return _train_locked(cfg, out, progress, log)


@contextmanager
def run_directory(out_dir: str | Path):
    """The run directory, created and locked: two training runs never write into the same one."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise SpikediffError(f"--out {out}: exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            raise SpikediffError(
                f"--out {out}: another training run (pid {lock.read().strip() or '?'}) is using it"
            ) from None
        lock.truncate(0)
        lock.write(str(os.getpid()))
        lock.flush()
        yield out


def _train_locked(cfg: TrainConfig, out: Path, progress: bool, log) -> Path:
    device = resolve_device(cfg.device)
    cfg.model.image_size = dataset_image_size(cfg.data)  # the model's image size follows the dataset

    images, _ = load_images(cfg.data, "train", limit=cfg.data_limit)
    data = to_model_range(images).to(device)
    if len(data) < 1:
        raise SpikediffError(f"dataset {cfg.data}: no training images")

    torch.manual_seed(cfg.seed)
    model = SpikingDenoiser(cfg.model).to(device)
    schedule = NoiseSchedule(cfg.num_train_timesteps, cfg.prediction_type)

    def batch_loss(model, gen, stats):
        idx = torch.randint(0, len(data), (cfg.batch_size,), generator=gen)
        t = torch.randint(0, cfg.num_train_timesteps, (cfg.batch_size,), generator=gen)
        noise = torch.randn((cfg.batch_size, *data.shape[1:]), generator=gen)
        x0, t, noise = data[idx.to(device)], t.to(device), noise.to(device)
        pred = model(schedule.add_noise(x0, noise, t), t, stats=stats)
        loss = torch.nn.functional.mse_loss(pred, schedule.target(x0, noise, t))
        if getattr(model, "local_loss", None) is not None:  # the lateral matrix's plasticity objective
            loss = loss + cfg.model.local_weight * model.local_loss
        return loss

    fit(Stage(model=model, header=_header(cfg), options=_train_options(cfg),
              resume_keys=("data", "batch_size", "lr", "seed", "prediction_type", "num_train_timesteps", "data_limit"),
              batch_loss=batch_loss, desc=f"train {cfg.data}",
              rate_norm={k: n * cfg.batch_size * cfg.model.num_steps for k, n in model.neuron_counts().items()},
              model_options=lambda config: DenoiserConfig.from_dict(config).effective()),
        cfg, out, progress, log)
    return out / "model.pt"


@dataclass
class Stage:
    """One network trained by ``fit``: what it is, how a batch's loss is computed, what a resume must match."""

    model: torch.nn.Module
    header: dict  # what every checkpoint carries to rebuild the model (checkpoint.FORMAT, VERSION, configs)
    options: dict  # training options, saved; those named in resume_keys must match when a run resumes
    resume_keys: tuple
    batch_loss: Callable  # (model, generator, stats dict or None) -> loss; draws its batch from the generator
    desc: str
    rate_norm: dict = field(default_factory=dict)  # population -> neuron updates per batch (firing rates)
    on_step: Callable | None = None  # (model, step, generator) after each optimizer step, e.g. codebook restarts
    loss_name: str = "MSE loss"
    # the options of a model_config dict that shape the model, as this version reads them (options added
    # since the checkpoint take their defaults; options the model ignores are left out)
    model_options: Callable = lambda config: config
    # weights to start from when the run starts fresh (``--init``: e.g. a shorter run, another T)
    init_state: dict | None = None


def learning_rate(cfg, step: int, warm_start: int = 0) -> float:
    """Linear warm-up over ``cfg.warmup`` steps (again from ``warm_start`` after a compact resume, whose
    optimizer starts afresh), then constant ``cfg.lr`` or, with ``cfg.decay_steps``, a cosine decay to
    ``cfg.lr_min`` at step ``decay_steps`` and constant after it: the rate at a step never depends on how
    many steps the run was asked for, so a run stopped at N equals a run asked for N."""
    lr = cfg.lr
    decay = getattr(cfg, "decay_steps", None)
    if decay and step > cfg.warmup:
        frac = min(1.0, (step - cfg.warmup) / max(1, decay - cfg.warmup))
        lr = cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1.0 + math.cos(math.pi * frac))
    return lr * min(1.0, (step + 1 - warm_start) / max(1, cfg.warmup))


def _half(state: dict) -> dict:
    return {k: v.half() if torch.is_floating_point(v) else v for k, v in state.items()}


def _full(state: dict) -> dict:
    return {k: v.float() if torch.is_floating_point(v) else v for k, v in state.items()}


def _check_resume(stage: Stage, ckpt: dict, path: Path) -> None:
    """A run resumes only with the options it was started with."""
    saved = ckpt["train_config"]
    for key in stage.resume_keys:
        if saved.get(key) != stage.options.get(key):
            raise SpikediffError(
                f"{path}: was trained with {key}={saved.get(key)!r}, this command asks for "
                f"{stage.options.get(key)!r}; use another --out directory or the same options"
            )
    was, asked = stage.model_options(ckpt["model_config"]), stage.model_options(stage.header["model_config"])
    differ = [f"{k}={was[k]!r} (this command: {asked[k]!r})" for k in sorted(set(was) & set(asked))
              if was[k] != asked[k]]  # options only one side uses follow from a switch that differs
    if differ or was != asked:
        raise SpikediffError(f"{path}: was trained with other model options: {', '.join(differ)}; use another "
                             f"--out directory or the same options")


def fit(stage: Stage, cfg, out: Path, progress: bool, log, resume_from: Path | None = None) -> None:
    """Train ``stage.model`` to ``cfg.steps`` in ``out`` (resuming from ``out/last.pt``), Adam with linear
    warm-up (``learning_rate``), gradient clipping, EMA; checkpoints every ``cfg.checkpoint_every``.

    Each checkpoint also writes ``out/resume.pt``: weights and EMA in float16, the step and the data order,
    small enough to commit. ``resume_from`` such a file continues a run in an empty ``out`` (on another
    machine): not bit for bit, since the optimizer restarts (with a fresh warm-up) and weights were rounded."""
    model = stage.model
    ema = EMA(model, cfg.ema_decay)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    step, loss_avg, warm_start = 0, None, 0

    last = out / "last.pt"
    if not last.exists() and resume_from is not None:
        ckpt = load_raw(resume_from)
        if "ema_half" not in ckpt:
            raise SpikediffError(f"--resume-from {resume_from}: not a compact resume file (a run's resume.pt)")
        _check_resume(stage, ckpt, resume_from)
        try:
            model.load_state_dict(_full(ckpt["model"]))
            ema.load_state_dict({"module": _full(ckpt["ema_half"]), "num_updates": ckpt["ema_updates"]})
        except (RuntimeError, KeyError) as exc:
            raise SpikediffError(f"--resume-from {resume_from}: weights do not fit the model "
                                 f"({str(exc).splitlines()[0]})") from None
        gen.set_state(ckpt["generator"])
        step = warm_start = ckpt["step"]
        loss_avg = ckpt.get("loss_avg")
        log(f"continuing from the compact file {resume_from} at step {step}/{cfg.steps} (fresh optimizer, "
            f"{cfg.warmup} warm-up steps)")
    elif not last.exists() and stage.init_state is not None:
        model.load_state_dict(stage.init_state)
        ema = EMA(model, cfg.ema_decay)
    if last.exists():
        ckpt = load_raw(last)
        _check_resume(stage, ckpt, last)
        model.load_state_dict(ckpt["model"])
        ema.load_state_dict(ckpt["ema_full"])
        opt.load_state_dict(ckpt["optimizer"])
        gen.set_state(ckpt["generator"])
        step = ckpt["step"]
        loss_avg = ckpt.get("loss_avg")
        warm_start = ckpt.get("warm_start", 0)
        log(f"resuming {last} at step {step}/{cfg.steps}")
        if step >= cfg.steps:
            log("already trained to the requested number of steps")
            return

    def save(loss_value):
        save_atomic({**stage.header, "model": model.state_dict(), "ema_full": ema.state_dict(),
                     "optimizer": opt.state_dict(), "generator": gen.get_state(), "step": step, "loss_avg": loss_value,
                     "warm_start": warm_start, "train_config": stage.options}, last)
        save_atomic({**stage.header, "model": _half(model.state_dict()), "ema_half": _half(ema.module.state_dict()),
                     "ema_updates": ema.num_updates, "generator": gen.get_state(), "step": step,
                     "loss_avg": loss_value, "train_config": stage.options}, out / "resume.pt")
        # The small file: EMA weights only, to sample, export and ship.
        save_atomic({**stage.header, "model": ema.module.state_dict(),
                     "train": {**stage.options, "step": step, "loss": loss_value}}, out / "model.pt")
        plot_training_log(out / "log.jsonl", out / "training.png", stage.loss_name, stage.desc)

    previous_handler = _signals_raise_interrupt()
    bar = tqdm(total=cfg.steps, initial=step, desc=stage.desc, unit="step", disable=not progress)
    t_start = time.perf_counter()
    try:
        with open(out / "log.jsonl", "a") as log_file:
            while step < cfg.steps:
                for group in opt.param_groups:
                    group["lr"] = learning_rate(cfg, step, warm_start)
                stats = {} if (step + 1) % cfg.log_every == 0 else None
                loss = stage.batch_loss(model, gen, stats)
                if not torch.isfinite(loss):
                    raise SpikediffError(f"loss became {loss.item()} at step {step}; try a lower --lr")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
                if stage.on_step is not None:
                    stage.on_step(model, step, gen)
                ema.update(model)
                step += 1
                value = loss.item()
                loss_avg = value if loss_avg is None else 0.98 * loss_avg + 0.02 * value
                bar.update(1)
                if stats is not None:
                    rates = {k: stats[k] / n for k, n in stage.rate_norm.items() if k in stats}
                    extra = {k: v for k, v in stats.items() if isinstance(v, float) and k not in stage.rate_norm}
                    bar.set_postfix(loss=f"{loss_avg:.4f}", rate=f"{sum(rates.values()) / max(1, len(rates)):.3f}")
                    log_file.write(json.dumps({"step": step, "loss": value, "loss_avg": loss_avg, "rates": rates,
                                               **extra, "elapsed_s": time.perf_counter() - t_start}) + "\n")
                    log_file.flush()
                if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                    save(loss_avg)
    except KeyboardInterrupt:
        bar.close()
        save(loss_avg)
        log(f"\ninterrupted: saved step {step} to {last}; run the same command to resume")
        raise
    finally:
        bar.close()
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
