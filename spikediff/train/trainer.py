"""DDPM training loop: resumable, atomic checkpoints, EMA weights, deterministic for a given seed.

A run directory holds ``last.pt`` (everything needed to resume, bit for bit), ``model.pt`` (EMA weights
only: the small file to sample, export and ship), ``log.jsonl`` (loss and firing rates over time) and
``training.png`` (the same as curves).
Running the same command again on the same directory resumes; a larger ``--steps`` extends the run.
The learning rate is constant after warm-up, so a run stopped at step N equals a run asked for N steps.
Under ``torchrun`` the pixel denoisers train data-parallel (``distributed``): the same global batch, split over
the processes; process 0 writes the files; a run resumes with any number of processes.
"""

from __future__ import annotations

import copy
import fcntl
import json
import math
import os
import signal
import stat
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .. import SpikediffError
from ..atomic import atomic_path, remove_stale_parts
from ..checkpoint import (
    FORMAT,
    VERSION,
    check_model_size,
    check_tensors,
    first_reason,
    load_raw,
    option_problem,
    save_atomic,
)
from ..data import load_images, to_model_range
from ..data.datasets import image_size as dataset_image_size
from ..diffusion import NoiseSchedule
from ..models import DenoiserConfig, UNetConfig
from ..models.unet import build
from . import distributed
from .plots import plot_training_log, read_log


@dataclass
class TrainConfig:
    data: str = "mnist"
    steps: int = 4000
    batch_size: int = 128
    lr: float = 1e-3
    lr_min: float = 1e-4
    decay_steps: int | None = None  # cosine decay of the learning rate to lr_min at this step (None: constant)
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
    amp: str | None = None  # mixed precision on CUDA: "bf16" or "fp16"
    # a fresh run starts from this checkpoint's weights (e.g. trained at another T, or on another dataset)
    init: str | None = None
    model: DenoiserConfig | UNetConfig = field(default_factory=DenoiserConfig)

    def validate(self) -> TrainConfig:
        check_run_options(self)
        if not (self.grad_clip > 0 and math.isfinite(self.grad_clip)) or self.warmup < 0:
            raise SpikediffError(f"grad_clip={self.grad_clip} must be positive and finite, warmup={self.warmup} >= 0")
        if self.amp not in (None, "bf16", "fp16"):
            raise SpikediffError(f"--amp {self.amp!r}: choose bf16 or fp16")
        check_model_options(self.model)
        self.model.validate()
        return self


def check_run_options(cfg, counts: tuple = (), decays: tuple = ("ema_decay",),
                      lr_decays: tuple = ("decay_steps",)) -> None:
    """The options every training run shares, checked alike for every kind: step and batch counts (plus
    ``counts``), the learning rate and, where the run has them, its decays (``lr_min``, and each of
    ``lr_decays``: a stage's ``decay_steps``), and the EMA decays (``decays``)."""
    for name in ("steps", "batch_size", "checkpoint_every", "log_every", *counts):
        if getattr(cfg, name) < 1:
            raise SpikediffError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
    if not 0 < cfg.lr < 1:
        raise SpikediffError(f"--lr must be in (0, 1), got {cfg.lr}")
    decaying = {o: getattr(cfg, o) for o in lr_decays if getattr(cfg, o, None) is not None}
    if decaying and not 0 <= cfg.lr_min <= cfg.lr:  # without a decay, --lr-min is never reached
        raise SpikediffError(f"--lr-min must be in [0, --lr], got {cfg.lr_min}")
    for option, decay in decaying.items():
        if decay <= cfg.warmup:
            raise SpikediffError(f"--{option.replace('_', '-')} {decay} must be after the warm-up ({cfg.warmup} "
                                 f"steps)")
    for name in decays:
        if not 0 <= getattr(cfg, name) < 1:
            raise SpikediffError(f"--{name.replace('_', '-')} must be in [0, 1), got {getattr(cfg, name)}")


def check_model_options(config) -> None:
    """Every option of a model config typed, finite and in range (``checkpoint.option_problem``): the
    configs' own checks compare, and a NaN threshold passes every comparison."""
    for name, spec in type(config).__dataclass_fields__.items():
        problem = option_problem(name, getattr(config, name), str(spec.type))
        if problem:
            raise SpikediffError(f"model option {name}={getattr(config, name)!r} {problem}")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SpikediffError(f"--device {name}: CUDA is not available on this machine")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SpikediffError(f"--device {name!r}: not a device name (use auto, cpu or cuda)") from None
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise SpikediffError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


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


class StepBoundary:
    """Ctrl-C (SIGINT) and SIGTERM take effect at the next step boundary, so what is saved is a state that
    an uninterrupted run also passes through: the weights, the optimizer, the EMA and the random generator
    all after the same step. (A KeyboardInterrupt raised anywhere could land after the batch was drawn
    and before the step counted, leaving the generator one batch ahead of the saved step.)

    A second signal stops at once without saving (the last checkpoint stays what resumes), except during a
    save, which finishes first so that the run's files always belong together. Signals a shell set to be
    ignored (a background job's SIGINT) stay ignored; off the main thread nothing is installed."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum = None  # the first signal, once received
        self.forced = None  # a second one held back during a save
        self.saving = False
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                if signal.getsignal(signum) is not signal.SIG_IGN:
                    self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
        return False

    def _handle(self, signum, frame):
        if self.signum is None:
            self.signum = signum
        elif self.saving:
            self.forced = signum
        else:
            raise KeyboardInterrupt(signum)

    def saved(self) -> None:
        """After a save: a second signal that came during it now stops the run."""
        self.saving = False
        if self.forced is not None:
            raise KeyboardInterrupt(self.forced)


def init_weights(init: str, model: torch.nn.Module) -> dict:
    """The weights of ``--init`` for ``model``, the network the run's options declare: a pixel denoiser's
    (``--model fsddim``) with the same layers and shapes, refused in one line otherwise. The options that shape
    no weight (T, the decays, the threshold) are the run's: fine-tuning at another T is the point of it."""
    from ..checkpoint import load_model_of
    from ..models import SpikingDenoiser, SpikingUNet

    source, _raw, _path = load_model_of(init, (SpikingDenoiser, SpikingUNet), "--init",
                                        "a pixel denoiser (--model fsddim)")
    state, own = source.state_dict(), model.state_dict()
    for name, value in own.items():
        if name not in state:
            raise SpikediffError(f"--init {init}: has no {name}: not the network these options declare (give the "
                                 f"--arch, --channels and other options it was trained with)")
        if state[name].shape != value.shape:
            raise SpikediffError(f"--init {init}: {name} is {tuple(state[name].shape)}, these options declare "
                                 f"{tuple(value.shape)} (give the --arch, --channels and other options it was "
                                 f"trained with)")
    extra = sorted(set(state) - set(own))
    if extra:
        raise SpikediffError(f"--init {init}: has {extra[0]}, which the network these options declare has not "
                             f"(e.g. --lateral or --selection)")
    return state


def _header(cfg: TrainConfig) -> dict:
    """What every checkpoint carries to rebuild the model and its noise schedule."""
    return {"format": FORMAT, "version": VERSION, "model_config": cfg.model.to_dict(),
            "diffusion": {"num_train_timesteps": cfg.num_train_timesteps, "prediction_type": cfg.prediction_type}}


def _train_options(cfg: TrainConfig) -> dict:
    return {k: v for k, v in asdict(cfg).items() if k != "model"}


def model_config(options: dict):
    """A pixel denoiser's config from a checkpoint's dict: a U-Net's names its ``arch``."""
    if "arch" in options:
        if isinstance(options.get("channel_mult"), list):
            options = {**options, "channel_mult": tuple(options["channel_mult"])}
        return UNetConfig.from_dict(options)
    return DenoiserConfig.from_dict(options)


def train(cfg: TrainConfig, out_dir: str | Path, progress: bool = True, log=print,
          resume_from: Path | None = None) -> Path:
    """Train (or resume) into out_dir; returns the path of the small EMA checkpoint.

    Ctrl-C (SIGINT) and SIGTERM save the current step before exiting. Under ``torchrun``, data-parallel:
    process 0 holds the run directory and writes to it, the others only train. ``resume_from``: a run's
    compact ``resume.pt``, continued in an empty ``out_dir`` (e.g. on another machine; see ``fit``).
    """
    cfg.validate()
    with distributed.group(resolve_device(cfg.device)) as g:
        if g.main:
            with run_directory(out_dir) as out:
                g.barrier()  # the others start once the directory is this run's
                return _train_locked(cfg, out, progress, log, g, resume_from)
        g.barrier()
        return _train_locked(cfg, Path(out_dir), False, lambda _message: None, g, resume_from)


@contextmanager
def run_directory(out_dir: str | Path):
    """The run directory, created and locked: two training runs never write into the same one."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise SpikediffError(f"--out {out}: exists and is not a directory")
    created = [p for p in (out, *out.parents) if not p.exists()]
    out.mkdir(parents=True, exist_ok=True)
    try:
        with _locked(out):
            yield out
    except BaseException:
        if created:  # a run that failed before writing anything leaves no empty folders behind
            (out / ".lock").unlink(missing_ok=True)
            for folder in created:
                try:
                    folder.rmdir()
                except OSError:
                    break  # it holds something: keep it and the folders above
        raise


@contextmanager
def _locked(out: Path):
    """The run directory's lock (``.lock``, holding the pid), taken without waiting."""
    lock_path = out / ".lock"
    try:  # never blocks, even if .lock were a FIFO
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0), 0o644)
    except OSError as exc:
        raise SpikediffError(f"--out {out}: cannot create its lock file ({exc.strerror or exc})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise SpikediffError(f"--out {out}: {lock_path} is not a regular file")
    os.set_blocking(fd, True)
    with os.fdopen(fd, "r+") as lock:
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
        clean_run_directory(out)
        yield out


#: the files a training run writes (atomically, through ``name.*.part`` temporaries) in its directory and in
#: the directories of its stages
RUN_FILES = ("last.pt", "resume.pt", "model.pt", "training.png", "log.jsonl", "tokens.pt", "latents.pt")


def clean_run_directory(out: Path) -> list:
    """Remove the temporary ``.part`` files a killed run left behind. Only a run holding the directory's lock
    writes the run's files, so under the lock every temporary of theirs is stale; other ``.part`` files
    (an ``eval`` or ``report`` writing into the run directory) go only if their writer is gone."""
    removed = []
    folders = [out] + sorted(d for d in out.iterdir() if d.is_dir() and not d.is_symlink())
    for folder in folders:
        for name in RUN_FILES:
            for part in folder.glob(f"{name}*.part"):
                try:
                    part.unlink()
                    removed.append(part)
                except OSError:
                    pass
        removed += remove_stale_parts(folder)
    return removed


def pad_images(data: torch.Tensor, size: int) -> torch.Tensor:
    """Images (N, C, h, w) in [-1, 1] padded with background (-1) to size x size (FSDDIM pads MNIST to 32)."""
    h, w = data.shape[-2:]
    if (h, w) == (size, size):
        return data
    top, left = (size - h) // 2, (size - w) // 2
    return torch.nn.functional.pad(data, (left, size - w - left, top, size - h - top), value=-1.0)


def _train_locked(cfg: TrainConfig, out: Path, progress: bool, log, g: distributed.Group | None = None,
                  resume_from: Path | None = None) -> Path:
    g = g or distributed.Group(device=resolve_device(cfg.device))
    device = g.device
    size = dataset_image_size(cfg.data)
    # the model's image size follows the dataset (a U-Net's, padded to a multiple of its down-sampling)
    cfg.model.image_size = cfg.model.padded_size(size) if isinstance(cfg.model, UNetConfig) else size

    images, _ = load_images(cfg.data, "train", limit=cfg.data_limit)
    data = pad_images(to_model_range(images), cfg.model.image_size).to(device)
    if len(data) < 1:
        raise SpikediffError(f"dataset {cfg.data}: no training images")

    # weights, gradients, Adam's two moments and the EMA: refused before allocating if they cannot fit
    check_model_size(lambda: build(cfg.model), "the network these options declare", copies=5)
    torch.manual_seed(cfg.seed)
    model = build(cfg.model).to(device)
    init_state = None if cfg.init is None else lambda: init_weights(cfg.init, model)
    schedule = NoiseSchedule(cfg.num_train_timesteps, cfg.prediction_type)
    rows = g.share(cfg.batch_size)

    def batch_loss(net, gen, stats):
        # every process draws the whole global batch from the same stream and trains on its rows of it
        idx = torch.randint(0, len(data), (cfg.batch_size,), generator=gen)[rows]
        t = torch.randint(0, cfg.num_train_timesteps, (cfg.batch_size,), generator=gen)[rows]
        noise = torch.randn((cfg.batch_size, *data.shape[1:]), generator=gen)[rows]
        x0, t, noise = data[idx.to(device)], t.to(device), noise.to(device)
        with distributed.autocast(device, cfg.amp):
            pred = net(schedule.add_noise(x0, noise, t), t, stats=stats)
        target = schedule.target(x0, noise, t)
        if g.active:  # this process's share of the global mean: DDP's average over processes is the mean
            loss = torch.nn.functional.mse_loss(pred.float(), target, reduction="sum")
            loss = loss * (g.world / (cfg.batch_size * target[0].numel()))
        else:
            loss = torch.nn.functional.mse_loss(pred.float(), target)
        if getattr(model, "local_loss", None) is not None:  # the lateral matrix's plasticity objective
            loss = loss + cfg.model.local_weight * model.local_loss
        return loss

    fit(Stage(model=model, header=_header(cfg), options=_train_options(cfg),
              resume_keys=("data", "batch_size", "lr", "decay_steps", "seed", "prediction_type", "num_train_timesteps",
                           "data_limit"),
              batch_loss=batch_loss, desc=f"train {cfg.data}",
              rate_norm={k: n * cfg.batch_size * cfg.model.num_steps for k, n in model.neuron_counts().items()},
              model_options=lambda config: model_config(config).effective(), init_state=init_state),
        cfg, out, progress, log, resume_from=resume_from, group=g)
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
    # () -> the weights a fresh run starts from (``--init``: e.g. a shorter run, another T); asked only when the
    # run starts fresh: a resumed run has its own, wherever the init file went since
    init_state: Callable[[], dict] | None = None
    # (model, step) before each step's batch: quantization-aware training refreshes its scales here
    before_step: Callable | None = None
    # a helper trained beside the model inside ``batch_loss`` (e.g. a discriminator): anything with
    # state_dict()/load_state_dict(), saved in every checkpoint, so that a resumed run equals an unbroken one,
    # and before_step(step), called before each step's batch
    companion: object | None = None


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


def _describe(kind) -> str:
    return "fsddim" if kind is None else repr(kind)


#: what each kind of file a run writes holds beyond the header, to tell them apart
_RESUME_ENTRIES = {"last.pt": ("model", "ema_full", "optimizer", "generator", "step", "train_config"),
                   "resume.pt": ("model", "ema_half", "ema_updates", "generator", "step", "train_config")}


def _check_resume_file(stage: Stage, ckpt: dict, path: Path, expected: str) -> None:
    """``path`` is the ``expected`` file ("last.pt" or "resume.pt") of a run of this stage's kind: not a
    sampler (model.pt), not the other resume file, not another model's run."""
    kind, want = ckpt.get("kind"), stage.header.get("kind")
    if kind != want:
        raise SpikediffError(f"{path}: a checkpoint of a {_describe(kind)} model, not the {expected} of a "
                             f"{_describe(want)} run; use another --out directory")
    missing = [k for k in _RESUME_ENTRIES[expected] if k not in ckpt]
    if missing:
        what = ("a compact resume file (resume.pt)" if "ema_half" in ckpt else "a run's last.pt" if "optimizer" in ckpt
                else "a sampler checkpoint (model.pt)" if "train" in ckpt else "not a training checkpoint")
        raise SpikediffError(f"{path}: {what}, not a run's {expected} (it lacks {', '.join(missing)})")
    if expected == "last.pt":
        check_tensors(path, ckpt["optimizer"].get("state", {}), "optimizer.state")


def _check_resume(stage: Stage, ckpt: dict, path: Path) -> None:
    """A run resumes only with the options it was started with."""
    saved = ckpt["train_config"]
    for key in stage.resume_keys:
        if saved.get(key) != stage.options.get(key):
            raise SpikediffError(
                f"{path}: was trained with {key}={saved.get(key)!r}, this command asks for "
                f"{stage.options.get(key)!r}; use another --out directory or the same options"
            )
    try:
        was = stage.model_options(ckpt["model_config"])
    except (SpikediffError, TypeError, ValueError, KeyError) as exc:
        raise SpikediffError(f"{path}: bad model_config ({exc})") from None
    asked = stage.model_options(stage.header["model_config"])
    differ = [f"{k}={was[k]!r} (this command: {asked[k]!r})" for k in sorted(set(was) & set(asked))
              if was[k] != asked[k]]  # options only one side uses follow from a switch that differs
    if differ or was != asked:
        raise SpikediffError(f"{path}: was trained with other model options: {', '.join(differ)}; use another "
                             f"--out directory or the same options")


def _restore_companion(stage: Stage, ckpt: dict, path: Path) -> None:
    if stage.companion is None:
        return
    if "companion" not in ckpt:
        raise SpikediffError(f"{path}: holds no state of this run's {type(stage.companion).__name__} (made by a run "
                             f"without it); use another --out directory or the same options")
    _restore(path, f"the {type(stage.companion).__name__}", lambda: stage.companion.load_state_dict(ckpt["companion"]))


def _restore(path: Path, what: str, load) -> None:
    """``load()`` (a load_state_dict, a set_state), any failure a one-line error naming the file."""
    try:
        load()
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError, AttributeError) as exc:
        raise SpikediffError(f"{path}: cannot restore {what} ({first_reason(exc)})") from None


def trim_log(path: Path, step: int) -> None:
    """Keep ``log.jsonl`` to the steps a resumed run has (at most ``step``, one record each, whole lines):
    a run killed after logging steps its checkpoint does not hold logs them again when it resumes."""
    if not path.exists():
        return
    records = read_log(path, max_step=step)
    lines = [json.dumps(r) for r in records]
    if path.read_text(errors="replace").splitlines() != lines:
        with atomic_path(path) as tmp:
            tmp.write_text("".join(line + "\n" for line in lines))


def _nonfinite_loss(value: float, step: int, model: torch.nn.Module, cfg, first_step: int) -> str:
    """Which of the likely causes of a loss that is not finite apply (options were checked on entry, so
    it is the run itself)."""
    bad = [name for name, p in model.named_parameters() if not bool(torch.isfinite(p).all())]
    named = f"{bad[0]}{' and others' if len(bad) > 1 else ''}" if bad else ""
    if bad and step == first_step:
        cause = f"the weights this run started from are not finite ({named})"
    elif bad:
        cause = f"the weights stopped being finite ({named}): the updates diverged"
    else:
        biggest = max((float(p.detach().abs().max()) for p in model.parameters() if p.numel()), default=0.0)
        cause = f"the weights are finite (largest |w| {biggest:.3g}) but the forward pass overflowed"
    hints = [f"a lower --lr (now {cfg.lr:g})"]
    if getattr(cfg, "warmup", 0) < 100:
        hints.append(f"a longer --warmup (now {cfg.warmup})")
    model_cfg = getattr(cfg, "model", None)
    if getattr(model_cfg, "lateral", False) and getattr(model_cfg, "local_weight", 0) > 0:
        hints.append(f"a lower --local-weight (now {model_cfg.local_weight:g})")
    return f"loss became {value} at step {step}; {cause}; try {' or '.join(hints)}"


class _NoLog:
    """The log file of a process that writes none (data-parallel processes other than process 0)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def write(self, _text):
        pass

    def flush(self):
        pass


def _summed(stats: dict, g: distributed.Group) -> dict:
    """Spike counts (and other per-batch sums) added over the processes of a data-parallel run."""
    if not g.active:
        return stats
    keys = sorted(stats)
    totals = g.sum(torch.tensor([float(stats[k]) for k in keys], dtype=torch.float64))
    return dict(zip(keys, totals.tolist()))


def fit(stage: Stage, cfg, out: Path, progress: bool, log, resume_from: Path | None = None,
        group: distributed.Group | None = None) -> None:
    """Train ``stage.model`` to ``cfg.steps`` in ``out`` (resuming from ``out/last.pt``), Adam with linear
    warm-up (``learning_rate``), gradient clipping, EMA; checkpoints every ``cfg.checkpoint_every``.

    Each checkpoint also writes ``out/resume.pt``: weights and EMA in float16, the step and the data order,
    small enough to commit. ``resume_from`` such a file continues a run in an empty ``out`` (on another
    machine): not bit for bit, since the optimizer restarts (with a fresh warm-up) and weights were rounded.

    Ctrl-C and SIGTERM stop the run at the next step boundary and save it there (``StepBoundary``), so a
    resumed run equals an uninterrupted one bit for bit; they then raise ``KeyboardInterrupt(signum)``.

    ``group``: a data-parallel run (``distributed``): every process steps the same weights on its share of the
    batch; losses, firing rates and a stop signal are agreed over the processes; only process 0 writes."""
    g = group or distributed.Group()
    if not g.main:
        log, progress = (lambda _message: None), False
    model = stage.model
    net = distributed.wrap(model, g)  # what the training step calls
    ema = EMA(model, cfg.ema_decay)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    amp = getattr(cfg, "amp", None)
    scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None  # fp16 gradients need loss scaling
    gen = torch.Generator().manual_seed(cfg.seed)
    step, loss_avg, warm_start = 0, None, 0

    last = out / "last.pt"
    if not last.exists() and resume_from is not None:
        ckpt = load_raw(resume_from)
        if "ema_half" not in ckpt:
            raise SpikediffError(f"--resume-from {resume_from}: not a compact resume file (a run's resume.pt)")
        _check_resume_file(stage, ckpt, resume_from, "resume.pt")
        _check_resume(stage, ckpt, resume_from)
        _restore(resume_from, "the weights", lambda: model.load_state_dict(_full(ckpt["model"])))
        _restore(resume_from, "the EMA weights", lambda: ema.load_state_dict(
            {"module": _full(ckpt["ema_half"]), "num_updates": ckpt["ema_updates"]}))
        _restore(resume_from, "the random generator state", lambda: gen.set_state(ckpt["generator"]))
        _restore_companion(stage, ckpt, resume_from)
        step = warm_start = ckpt["step"]
        loss_avg = ckpt.get("loss_avg")
        log(f"continuing from the compact file {resume_from} at step {step}/{cfg.steps} (fresh optimizer, "
            f"{cfg.warmup} warm-up steps)")
    elif not last.exists() and stage.init_state is not None:
        _restore(Path("--init"), "the weights", lambda: model.load_state_dict(stage.init_state()))
        ema = EMA(model, cfg.ema_decay)
    if last.exists():
        ckpt = load_raw(last)
        _check_resume_file(stage, ckpt, last, "last.pt")
        _check_resume(stage, ckpt, last)
        _restore(last, "the weights", lambda: model.load_state_dict(ckpt["model"]))
        _restore(last, "the EMA weights", lambda: ema.load_state_dict(ckpt["ema_full"]))
        _restore(last, "the optimizer state", lambda: opt.load_state_dict(ckpt["optimizer"]))
        _restore(last, "the random generator state", lambda: gen.set_state(ckpt["generator"]))
        if scaler is not None and isinstance(ckpt.get("grad_scaler"), dict):
            _restore(last, "the gradient scaler", lambda: scaler.load_state_dict(ckpt["grad_scaler"]))
        _restore_companion(stage, ckpt, last)
        step = ckpt["step"]
        loss_avg = ckpt.get("loss_avg")
        warm_start = ckpt.get("warm_start", 0)
        if ckpt.get("qat_scales"):  # quantization-aware training: the grid the step before the stop used
            model.qat_scales = dict(ckpt["qat_scales"])
        log(f"resuming {last} at step {step}/{cfg.steps}")
        if step >= cfg.steps:
            log("already trained to the requested number of steps")
            return
    if g.main:
        trim_log(out / "log.jsonl", step)

    def save(loss_value):
        if not g.main:
            return
        companion = {} if stage.companion is None else {"companion": stage.companion.state_dict()}
        extra = {"grad_scaler": scaler.state_dict()} if scaler is not None else {}
        save_atomic({**stage.header, "model": model.state_dict(), "ema_full": ema.state_dict(),
                     "optimizer": opt.state_dict(), "generator": gen.get_state(), "step": step, "loss_avg": loss_value,
                     "warm_start": warm_start, "qat_scales": getattr(model, "qat_scales", None),
                     "train_config": stage.options, **extra, **companion}, last)
        save_atomic({**stage.header, "model": _half(model.state_dict()), "ema_half": _half(ema.module.state_dict()),
                     "ema_updates": ema.num_updates, "generator": gen.get_state(), "step": step,
                     "loss_avg": loss_value, "train_config": stage.options, **companion}, out / "resume.pt")
        # The small file: EMA weights only, to sample, export and ship.
        save_atomic({**stage.header, "model": ema.module.state_dict(),
                     "train": {**stage.options, "step": step, "loss": loss_value}}, out / "model.pt")
        plot_training_log(out / "log.jsonl", out / "training.png", stage.loss_name, stage.desc)

    bar = tqdm(total=cfg.steps, initial=step, desc=stage.desc, unit="step", disable=not progress)
    t_start = time.perf_counter()
    saved_step, first_step = None, step
    stopping = False
    try:
        with StepBoundary() as boundary, open(out / "log.jsonl", "a") if g.main else _NoLog() as log_file:
            while step < cfg.steps and not stopping:
                for param_group in opt.param_groups:
                    param_group["lr"] = learning_rate(cfg, step, warm_start)
                stats = {} if (step + 1) % cfg.log_every == 0 else None
                if stage.before_step is not None:
                    stage.before_step(model, step)
                if stage.companion is not None:
                    stage.companion.before_step(step)
                loss = stage.batch_loss(net, gen, stats)
                value = float(g.sum(loss.detach())) / g.world  # the global batch's loss, the same everywhere
                if not math.isfinite(value):
                    raise SpikediffError(_nonfinite_loss(value, step, model, cfg, first_step))
                opt.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                    scaler.step(opt)
                    scaler.update()
                else:
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                    opt.step()
                if stage.on_step is not None:
                    stage.on_step(model, step, gen)
                ema.update(model)
                step += 1
                loss_avg = value if loss_avg is None else 0.98 * loss_avg + 0.02 * value
                bar.update(1)
                stopping = boundary.signum is not None
                if g.active:  # a signal to any process stops them all at this step
                    stopping = bool(g.sum(torch.tensor([float(stopping)])) > 0)
                if stats is not None:
                    stats = _summed(stats, g)
                    rates = {k: stats[k] / n for k, n in stage.rate_norm.items() if k in stats}
                    extra = {k: v for k, v in stats.items() if isinstance(v, float) and k not in stage.rate_norm}
                    bar.set_postfix(loss=f"{loss_avg:.4f}", rate=f"{sum(rates.values()) / max(1, len(rates)):.3f}")
                    log_file.write(json.dumps({"step": step, "loss": value, "loss_avg": loss_avg, "rates": rates,
                                               **extra, "elapsed_s": time.perf_counter() - t_start}) + "\n")
                    log_file.flush()
                if step % cfg.checkpoint_every == 0 or step == cfg.steps or stopping:
                    boundary.saving = True
                    save(loss_avg)
                    saved_step = step
                    boundary.saved()
            if saved_step is None:  # continued from a compact file at its last step: the run's files, here
                save(loss_avg)
            if stopping:
                raise KeyboardInterrupt(boundary.signum or signal.SIGTERM)
    except KeyboardInterrupt:
        bar.close()
        if saved_step == step:
            log(f"\ninterrupted: saved step {step} to {last}; run the same command to resume")
        else:  # a second signal: stopped at once, nothing of the current step saved
            log(f"\ninterrupted again: stopped without saving step {step}; {last} resumes from its own step")
        raise
    finally:
        bar.close()
