"""Checkpoint files: written atomically, validated on load with errors that name the file and the problem.

Nothing in a checkpoint is trusted: it is read with ``weights_only`` (no code runs), only from a regular file,
and every entry is checked for its type, every number and every weight for being finite, and the network it
declares for its size, before a model is built from it.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import torch

from . import SpikediffError
from .atomic import atomic_path, open_regular

FORMAT = "spikediff-checkpoint"
VERSION = 1
_ASSETS = Path(__file__).parent / "assets"
#: checkpoints shipped in the package (usable as CKPT on the command line): the FSDDIM-style pixel denoisers by the
#: dataset they were trained on (MNIST's a spiking U-Net, the ``small`` preset; "<dataset>-patch" the first, smaller
#: patch denoisers), the Spiking-Diffusion (spiking-vq) samplers as "<dataset>-vq", the latent DDIMs as
#: "<dataset>-latent". The U-Net is shipped as its run's compact resume file (the committed
#: benchmarks/checkpoints/unet-small.resume.pt, the same bytes: no second copy in the repository's history)
SHIPPED_MODELS = {"mnist": _ASSETS / "fsddim_mnist_unet.pt", "fashion-mnist": _ASSETS / "fsddim_fashion_patch.pt",
                  "mnist-patch": _ASSETS / "fsddim_mnist_patch.pt",
                  "mnist-vq": _ASSETS / "spiking_vq_mnist.pt", "fashion-mnist-vq": _ASSETS / "spiking_vq_fashion.pt",
                  "mnist-latent": _ASSETS / "latent_ddim_mnist.pt",
                  "fashion-mnist-latent": _ASSETS / "latent_ddim_fashion.pt"}
SHIPPED = SHIPPED_MODELS["mnist"]  # the default model
MAX_TRAIN_TIMESTEPS = 100_000  # a noise schedule is built step by step: more is no model, only a hang
# options that must be positive, or at least zero, beyond what the model configs check themselves
_POSITIVE = ("threshold", "max_period")
_NON_NEGATIVE = ("local_weight", "lateral_decay", "commitment")


class CheckpointError(SpikediffError):
    pass


def save_atomic(obj: dict, path: str | Path) -> Path:
    """torch.save to a temporary file beside `path`, then rename: a crash never leaves a half-written file."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def load_raw(path: str | Path) -> dict:
    """The checkpoint dict of a spikediff checkpoint file, its entries checked (``check_entries``)."""
    path = Path(path)
    with open_regular(path, "checkpoint", CheckpointError) as fh:
        try:
            # torch warns about pickle protocols of files that are not its own: our one-line error says it
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ckpt = torch.load(fh, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(f"checkpoint {path}: not a readable PyTorch file ({type(exc).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path}: not a spikediff checkpoint")
    if ckpt.get("version") != VERSION:
        raise CheckpointError(f"checkpoint {path}: format version {ckpt.get('version')!r}, this spikediff reads "
                              f"{VERSION}")
    for key in ("model_config", "diffusion", "model"):
        if key not in ckpt:
            raise CheckpointError(f"checkpoint {path}: missing entry {key!r}")
    check_entries(path, ckpt)
    return ckpt


def _type(value) -> str:
    return "None" if value is None else type(value).__name__


def _need(path: Path, ckpt: dict, key: str, kind, what: str) -> None:
    if key in ckpt and not isinstance(ckpt[key], kind):
        raise CheckpointError(f"checkpoint {path}: entry {key!r} is a {_type(ckpt[key])}, not {what}")


def check_entries(path: Path, ckpt: dict) -> None:
    """The types of the entries every kind of checkpoint may hold, and every weight finite."""
    kind = ckpt.get("kind")
    if kind is not None and not isinstance(kind, str):
        raise CheckpointError(f"checkpoint {path}: entry 'kind' is a {_type(kind)}, not a name")
    for key in ("model_config", "diffusion", "model", "train", "ema_full", "ema_half", "latent", "autoencoder",
                "train_config", "optimizer"):
        _need(path, ckpt, key, dict, "a dict")
    for key in ("step", "ema_updates", "warm_start"):
        if key in ckpt and (not isinstance(ckpt[key], int) or isinstance(ckpt[key], bool) or ckpt[key] < 0):
            raise CheckpointError(f"checkpoint {path}: entry {key!r} is {ckpt[key]!r}, not a step count")
    for key in ("model", "ema_half", "autoencoder"):
        if key in ckpt:
            check_tensors(path, ckpt[key], key)
    if "ema_full" in ckpt:
        ema = ckpt["ema_full"]
        if not isinstance(ema.get("module"), dict):
            raise CheckpointError(f"checkpoint {path}: entry 'ema_full' has no weights ('module')")
        check_tensors(path, ema["module"], "ema_full.module")
    if "generator" in ckpt and not (isinstance(ckpt["generator"], torch.Tensor)
                                    and ckpt["generator"].dtype == torch.uint8):
        raise CheckpointError(f"checkpoint {path}: entry 'generator' is not a random generator state")


def check_tensors(path: Path, state, where: str) -> None:
    """A state dict (or a dict of them) holds only tensors, and every floating-point one is finite."""
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path}: {where} is a {_type(state)}, not a dict of tensors")
    for name, value in state.items():
        at = f"{where}.{name}"
        if isinstance(value, dict):
            check_tensors(path, value, at)
        elif not isinstance(value, torch.Tensor):
            raise CheckpointError(f"checkpoint {path}: {at} is a {_type(value)}, not a tensor")
        elif (value.is_floating_point() or value.is_complex()) and not bool(torch.isfinite(value).all()):
            what = "NaN" if bool(torch.isnan(value).any()) else "infinite values"
            raise CheckpointError(f"checkpoint {path}: tensor {at} holds {what}")


def resolve(path: str | Path | None) -> Path:
    """The file behind a CKPT argument: a path that exists wins over a shipped model's name; None is mnist."""
    if path is None:
        return SHIPPED
    if str(path) in SHIPPED_MODELS and not Path(path).exists():
        return SHIPPED_MODELS[str(path)]
    return Path(path)


def check_options(path, cls, options, where: str = "model_config"):
    """A model config from a checkpoint's dict: every option of the right type, finite and in range, then
    ``cls.from_dict``; any problem is a one-line error naming the file."""
    if not isinstance(options, dict):
        raise CheckpointError(f"checkpoint {path}: {where} is a {_type(options)}, not a dict of options")
    fields = cls.__dataclass_fields__
    for key, value in options.items():
        if key not in fields:
            continue  # from_dict names the unknown ones
        problem = option_problem(key, value, str(fields[key].type))
        if problem:
            raise CheckpointError(f"checkpoint {path}: {where} option {key}={value!r} {problem}")
    try:
        return cls.from_dict(options)
    except SpikediffError as exc:
        raise CheckpointError(f"checkpoint {path}: {where}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path}: bad {where} ({exc})") from None


def option_problem(key: str, value, annotation: str) -> str | None:
    """Why ``value`` cannot be option ``key`` of type ``annotation`` ("int", "float", "bool", "str", "X | None"),
    or None."""
    types = {t.strip() for t in annotation.split("|")}
    if value is None:
        return None if "None" in types else "is missing (None)"
    if "bool" in types:
        return None if isinstance(value, bool) else "must be true or false"
    if isinstance(value, bool):
        return "must be a number"
    if "int" in types and "float" not in types and not isinstance(value, int):
        return "must be an integer"
    if "float" in types:
        if not isinstance(value, (int, float)):
            return "must be a number"
        if not math.isfinite(value):
            return "must be finite"
    if "str" in types and not isinstance(value, str):
        return "must be a name"
    if key in _POSITIVE and isinstance(value, (int, float)) and not value > 0:
        return "must be positive"
    if key in _NON_NEGATIVE and isinstance(value, (int, float)) and not value >= 0:
        return "must be >= 0"
    return None


def _schedule(path: Path, diffusion: dict):
    from .diffusion import NoiseSchedule
    from .diffusion.schedule import PREDICTION_TYPES

    unknown = set(diffusion) - {"num_train_timesteps", "prediction_type"}
    if unknown:
        raise CheckpointError(f"checkpoint {path}: unknown diffusion options {sorted(unknown)}")
    n = diffusion.get("num_train_timesteps", 1000)
    if not isinstance(n, int) or isinstance(n, bool) or not 2 <= n <= MAX_TRAIN_TIMESTEPS:
        raise CheckpointError(f"checkpoint {path}: diffusion num_train_timesteps={n!r} must be an integer in "
                              f"[2, {MAX_TRAIN_TIMESTEPS}]")
    prediction = diffusion.get("prediction_type", "epsilon")
    if prediction not in PREDICTION_TYPES:
        raise CheckpointError(f"checkpoint {path}: diffusion prediction_type={prediction!r} must be one of "
                              f"{', '.join(PREDICTION_TYPES)}")
    return NoiseSchedule(n, prediction)


# -- sizes -------------------------------------------------------------------------------------------------


def available_memory() -> int | None:
    """Bytes this machine can still give (MemAvailable + SwapFree of /proc/meminfo); None where unknown."""
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    fields = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            fields[name] = int(parts[0]) * 1024
    if "MemAvailable" not in fields:
        return None
    return fields["MemAvailable"] + fields.get("SwapFree", 0)


def gigabytes(n: float) -> str:
    return f"{n / 1e9:.3g} GB" if n >= 1e8 else f"{n / 1e6:.3g} MB"


def check_memory(need: float, what: str, error=SpikediffError) -> None:
    """Refuse, before allocating, work that needs more memory than the machine has available."""
    if math.isinf(need):
        raise error(f"{what} is too large for any memory (its sizes overflow 64-bit integers)")
    have = available_memory()
    if have is not None and need > have:
        raise error(f"{what} needs about {gigabytes(need)} of memory, more than the {gigabytes(have)} available "
                    f"here")


_FACTORIES = ("empty", "zeros", "ones", "rand", "randn", "full", "empty_strided", "randint", "normal", "eye")


def parameter_bytes(build) -> float | None:
    """Bytes of the parameters and buffers of the module ``build()`` makes, without allocating them: its
    tensor factories are sent to the ``meta`` device (snnTorch's scalar buffers, made with ``torch.tensor``,
    stay real). None if the module cannot be built that way, inf if its sizes overflow even there."""
    from torch.overrides import TorchFunctionMode

    factories = {getattr(torch, name) for name in _FACTORIES}

    class OnMeta(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = dict(kwargs or {})
            if func in factories:
                kwargs["device"] = "meta"
            return func(*args, **kwargs)

    try:
        with OnMeta():
            module = build()
    except SpikediffError:
        raise
    except Exception as exc:  # sizes beyond int64 overflow even on the meta device
        return math.inf if isinstance(exc, OverflowError) or "overflow" in str(exc).lower() else None
    tensors = list(module.parameters()) + list(module.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def check_model_size(build, what: str, copies: int = 1, error=SpikediffError) -> None:
    """Refuse a network whose weights (``copies`` of them: training keeps gradients, Adam's two moments and
    the EMA beside the weights) do not fit in memory, before PyTorch tries to allocate them."""
    size = parameter_bytes(build)
    if size is not None:
        check_memory(size * copies, what, error)


def feature_map_bytes(config) -> int:
    """Bytes of the activations one image needs at least: a few (4) feature maps of the widest grid, the
    image or the latent grid times the channels. A fully convolutional network's weights do not grow with
    the image, so a declared image size of 10^12 passes the weight check; this one refuses it."""
    side = getattr(config, "image_size", None) or getattr(config, "grid", 0)
    width = max(getattr(config, "channels", 1), getattr(config, "in_channels", 1))
    return 4 * 4 * side * side * width


def _build(path: Path, build, config, what: str = "the network it declares"):
    """``build()`` after checking its size (weights, and the activations of one image); errors name the file."""
    check_model_size(build, f"checkpoint {path}: {what}", error=CheckpointError)
    check_memory(feature_map_bytes(config), f"checkpoint {path}: one image through {what}", CheckpointError)
    try:
        return build()
    except SpikediffError as exc:
        raise CheckpointError(f"checkpoint {path}: {exc}") from None
    except (TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"checkpoint {path}: bad model_config ({str(exc).splitlines()[0]})") from None


# -- models ------------------------------------------------------------------------------------------------


def trained_steps(ckpt: dict) -> int | None:
    """The training steps behind a checkpoint: a sampler's ``train`` record, or a run's compact resume file's own
    ``step`` (it has no ``train``), or None."""
    record = ckpt.get("train")
    step = record.get("step") if isinstance(record, dict) else ckpt.get("step")
    return step if isinstance(step, int) else None


def trained_on(ckpt: dict) -> str | None:
    """The dataset a checkpoint was trained on: a sampler's ``train`` record, or a run's compact resume file's
    ``train_config`` (which has no ``train``), or None."""
    for key in ("train", "train_config"):
        record = ckpt.get(key)
        if isinstance(record, dict) and record.get("data"):
            return record["data"]
    return None


def load_model(path: str | Path | None = None, weights: str = "ema"):
    """(model, noise schedule, checkpoint dict) from model.pt, last.pt or resume.pt; the shipped one if path
    is None.

    weights="raw" takes a last.pt's un-averaged weights instead of the EMA. One loader per kind of sampler
    (``LOADERS``, by the checkpoint's ``kind``; none is the pixel DDIM): a ``spiking-vq`` checkpoint gives a
    ``SpikingVQDiffusion`` and no noise schedule (its mask schedule is an attribute of the model).
    """
    path = resolve(path)
    ckpt = load_raw(path)
    kind = ckpt.get("kind") or "fsddim"
    base = kind.split(":")[0]
    if base not in LOADERS:
        raise CheckpointError(f"checkpoint {path}: a {kind.split(':')[-1]!r} checkpoint, not a sampler (samplers: "
                              f"{', '.join(LOADERS)})")
    model, schedule = LOADERS[base](path, ckpt, weights)
    roles = ckpt.get(ON_GRID, [])
    if not isinstance(roles, (list, tuple)) or not all(isinstance(r, str) for r in roles):
        raise CheckpointError(f"checkpoint {path}: {ON_GRID} must be a list of network roles, got {roles!r}")
    model.trained_on_grid = tuple(roles)
    return model.eval(), schedule, ckpt


def load_vq_stage(path: str | Path, weights: str = "ema"):
    """(VQ-SVAE, checkpoint dict) of a two-stage spiking-vq run's VQ-stage file (``OUT/vq/model.pt``, ``last.pt``
    or ``resume.pt``): the stage is not a sampler, but its reconstructions can be judged before an SDID is trained
    on its tokens (``benchmarks/vq_codebook.py``)."""
    from .models import SpikingVQVAE, VQConfig
    from .models.vq_diffusion import KIND

    path = resolve(path)
    ckpt = load_raw(path)
    if ckpt.get("kind") != KIND + ":vq":
        raise CheckpointError(f"checkpoint {path}: not the VQ stage of a {KIND} run (its kind: {ckpt.get('kind')!r})")
    cfg = check_options(path, VQConfig, ckpt["model_config"])
    vq = _build(path, lambda: SpikingVQVAE(cfg), cfg, "its VQ-SVAE")
    _load_state(path, vq, _weights(path, ckpt, weights))
    return vq.eval(), ckpt


ON_GRID = "trained_on_grid"  # the network roles of a sampler trained quantization-aware (``train.qat``)


def mark_on_grid(ckpt: dict, role: str, on: bool) -> dict:
    """``ckpt`` with network ``role`` recorded as trained quantization-aware (``on``) or not: the compiler
    bias-corrects such a network against its weights on the fixed-point grid (``export.bias_correction``)."""
    roles = [r for r in ckpt.get(ON_GRID, []) if r != role] + ([role] if on else [])
    return {**{k: v for k, v in ckpt.items() if k != ON_GRID}, **({ON_GRID: sorted(roles)} if roles else {})}


def load_model_of(name: str, classes: tuple, option: str, wanted: str) -> tuple:
    """(model, checkpoint dict, path) of the checkpoint an option names (``--init``), refused in one line
    unless its model is one of ``classes`` (``wanted`` says what the option takes)."""
    path = resolve(name)
    model, _, raw = load_model(path)
    if not isinstance(model, classes):
        raise CheckpointError(f"{option} {name}: a {raw.get('kind') or 'fsddim'} checkpoint, not {wanted}")
    return model, raw, path


def _load_fsddim(path: Path, ckpt: dict, weights: str):
    """The pixel-space DDIM denoiser: the patch denoiser, or a spiking U-Net when its config names an ``arch``."""
    from .models import DenoiserConfig, UNetConfig
    from .models.unet import build

    options = ckpt["model_config"]
    unet = isinstance(options, dict) and "arch" in options
    if unet and isinstance(options.get("channel_mult"), list):  # a list once written as JSON elsewhere
        options = {**options, "channel_mult": tuple(options["channel_mult"])}
    cfg = check_options(path, UNetConfig if unet else DenoiserConfig, options)
    schedule = _schedule(path, ckpt["diffusion"])
    model = _build(path, lambda: build(cfg), cfg)
    _load_state(path, model, _weights(path, ckpt, weights))
    return model, schedule


def _weights(path: Path, ckpt: dict, weights: str) -> dict:
    """The state dict to load: the EMA of a last.pt (``ema_full``) or of a compact resume.pt (``ema_half``,
    float16) unless ``weights="raw"``, else ``model``."""
    if "ema_half" in ckpt:  # a compact resume file
        state = ckpt["ema_half"] if weights == "ema" else ckpt["model"]
        return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    return ckpt["ema_full"]["module"] if weights == "ema" and "ema_full" in ckpt else ckpt["model"]


def _load_state(path: Path, model, state) -> None:
    check_tensors(path, state, "weights")
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, KeyError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"checkpoint {path}: weights do not fit the model ({first_reason(exc)})") from None


def first_reason(exc: BaseException, limit: int = 200) -> str:
    """The first informative line of an exception, shortened: torch's state-dict errors open with a line that
    only says there are errors."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].startswith("Error(s) in loading"):
        lines = lines[1:]
    reason = lines[0] if lines else type(exc).__name__
    return reason if len(reason) <= limit else reason[:limit - 3] + "..."


def _load_vq(path: Path, ckpt: dict, weights: str):
    from .diffusion.absorbing import MASK_SCHEDULES
    from .models import SpikingTokenDenoiser, SpikingVQDiffusion, SpikingVQVAE, TokenDenoiserConfig, VQConfig
    from .models.vq_diffusion import KIND

    kind = ckpt["kind"]
    if kind != KIND:
        stage = kind.split(":")[-1]
        hint = (f"; sample from the run's model.pt ({path.parent.parent / 'model.pt'})" if kind.startswith(KIND + ":")
                else "")
        raise CheckpointError(f"checkpoint {path}: a {stage!r} checkpoint, not a sampler{hint}")
    cfg, state = ckpt["model_config"], ckpt["model"]
    if not {"vq", "sdid"} <= set(cfg) & set(state):
        raise CheckpointError(f"checkpoint {path}: a {KIND} checkpoint needs 'vq' and 'sdid' configs and weights")
    vq_cfg = check_options(path, VQConfig, cfg["vq"], "model_config vq")
    sdid_cfg = check_options(path, TokenDenoiserConfig, cfg["sdid"], "model_config sdid")
    schedule = ckpt["diffusion"].get("mask_schedule", "cosine")
    if schedule not in MASK_SCHEDULES:
        raise CheckpointError(f"checkpoint {path}: diffusion mask_schedule={schedule!r} must be one of "
                              f"{', '.join(MASK_SCHEDULES)}")
    vq = _build(path, lambda: SpikingVQVAE(vq_cfg), vq_cfg, "its VQ-SVAE")
    sdid = _build(path, lambda: SpikingTokenDenoiser(sdid_cfg), sdid_cfg, "its SDID")
    _load_state(path, vq, state["vq"])
    _load_state(path, sdid, state["sdid"])
    return SpikingVQDiffusion(vq, sdid, schedule).eval(), None


def _load_latent(path: Path, ckpt: dict, weights: str):
    from .models import SpikingVQVAE, VQConfig
    from .models.latent_ddim import KIND, LatentDDIM
    from .models.latent_denoiser import LatentDenoiserConfig, SpikingLatentDenoiser

    if ckpt["kind"] != KIND:
        raise CheckpointError(f"checkpoint {path}: unknown kind {ckpt['kind']!r}")
    cfg, latent = ckpt["model_config"], ckpt.get("latent")
    if not {"vq", "denoiser"} <= set(cfg) or not isinstance(latent, dict) or "autoencoder" not in ckpt:
        raise CheckpointError(f"checkpoint {path}: a latent-ddim checkpoint needs 'vq' and 'denoiser' configs, "
                              f"'latent' statistics and the 'autoencoder' weights")
    vq_cfg = check_options(path, VQConfig, cfg["vq"], "model_config vq")
    den_cfg = check_options(path, LatentDenoiserConfig, cfg["denoiser"], "model_config denoiser")
    stats = {}
    for key in ("mean", "std"):
        value = latent.get(key)
        if not isinstance(value, (list, tuple)) or len(value) != den_cfg.latent_channels or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value):
            raise CheckpointError(f"checkpoint {path}: latent {key} must be {den_cfg.latent_channels} finite numbers")
        stats[key] = value
    if not all(v > 0 for v in stats["std"]):
        raise CheckpointError(f"checkpoint {path}: latent std must be positive")
    if not isinstance(latent.get("snap", False), bool):
        raise CheckpointError(f"checkpoint {path}: latent snap must be true or false")
    vq = _build(path, lambda: SpikingVQVAE(vq_cfg), vq_cfg, "its autoencoder")
    denoiser = _build(path, lambda: SpikingLatentDenoiser(den_cfg), den_cfg, "its latent denoiser")
    _load_state(path, vq, ckpt["autoencoder"])
    _load_state(path, denoiser, _weights(path, ckpt, weights))
    model = LatentDDIM(vq, denoiser, stats["mean"], stats["std"], latent.get("snap", False))
    return model, _schedule(path, ckpt["diffusion"])


# the checkpoint format of each kind of sampler (``diffusion.kinds`` names the same kinds)
LOADERS = {"fsddim": _load_fsddim, "spiking-vq": _load_vq, "latent-ddim": _load_latent}
