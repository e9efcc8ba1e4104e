"""The `spikediff` command line."""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
from pathlib import Path

from . import RunFailure, SpikediffError, __version__


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def _nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be >= 0")
    return value


def _positive_int(text: str) -> int:
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


def _non_negative_int(text: str) -> int:
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be >= 0")
    return value


def _seed(text: str) -> int:
    """Seeds feed torch and numpy generators: both take integers in [0, 2**63)."""
    value = _integer(text)
    if not 0 <= value < 2 ** 63:
        raise argparse.ArgumentTypeError(f"{value} must be in [0, 2**63)")
    return value


def _finite(text: str) -> float:
    """A float that is a number: NaN and infinities pass every comparison check downstream unnoticed."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number")
    return value


def _positive_float(text: str) -> float:
    value = _finite(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} must be positive")
    return value


def _non_negative_float(text: str) -> float:
    value = _finite(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text} must be >= 0")
    return value


def _interval(low: float, high: float, closed_low: bool, closed_high: bool):
    """A type function for a finite float in an interval, e.g. the learning rate in (0, 1)."""
    def check(text: str) -> float:
        value = _finite(text)
        if not ((value >= low if closed_low else value > low) and (value <= high if closed_high else value < high)):
            raise argparse.ArgumentTypeError(f"{text} must be in {'[' if closed_low else '('}{low:g}, "
                                             f"{high:g}{']' if closed_high else ')'}")
        return value

    check.__name__ = "number"
    return check


def _decay(name: str):
    """A type function for a Lava decay (beta, readout alpha): in [0, 1], a multiple of 1/4096."""
    def check(text: str) -> float:
        from .models.neurons import check_dyadic

        value = _finite(text)
        try:
            check_dyadic(name, value)
        except SpikediffError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return value

    check.__name__ = "number"
    return check


def _check_outputs(outputs, quiet: bool = False) -> None:
    """Check every output before the work starts (``atomic.check_output``); say which will be overwritten."""
    from .atomic import check_output

    for path, what, directory in outputs:
        if path is not None and check_output(path, what, directory) and not quiet:
            print(f"{what} {path} exists: {'writing into it' if directory else 'it will be overwritten'}")


def _check_images_memory(n: int, shape, what: str) -> None:
    """``n`` images of ``shape`` are held at once (the noise, the samples, the grid): refuse before allocating
    what cannot fit."""
    from .checkpoint import check_memory

    check_memory(n * math.prod(shape) * 4 * 4, what)


def cmd_data_fetch(args) -> int:
    from .data import fetch

    for name in args.names:
        fetch(name, root=args.root, from_dir=args.from_dir, force=args.force)
    return 0


def cmd_data_info(args) -> int:
    from .data import load_images
    from .data.datasets import ALL_NAMES, data_root
    from .data.fetch import is_complete

    print(f"data root: {args.root or data_root()}")
    for name in ALL_NAMES:
        if name != "digits" and not is_complete(name, args.root):
            print(f"  {name:14s} not fetched (spikediff data fetch {name})")
            continue
        sizes = [len(load_images(name, split, root=args.root)[0]) for split in ("train", "test")]
        print(f"  {name:14s} train {sizes[0]:6d}  test {sizes[1]:6d}")
    return 0


MODELS = ("fsddim", "spiking-vq", "latent-ddim", "latent-decoder")


def _check_training_size(args, builds, image_elements: int) -> None:
    """Refuse sizes that cannot fit before a trainer allocates them: each network's weights with their
    gradients, Adam's moments and the EMA (5 copies), and a batch's images (noise, inputs, targets)."""
    from .checkpoint import check_memory, check_model_size

    for build in builds:
        check_model_size(build, "the network these options declare (--channels, --hidden, ...)", copies=5)
    batch = args.batch_size or 0
    check_memory(batch * image_elements * 4 * 4, f"--batch-size {batch}")


def cmd_train(args) -> int:
    from .models import DenoiserConfig
    from .train.distributed import launched
    from .train.trainer import resolve_device

    _check_outputs([(args.out, "--out", True)], quiet=True)  # an existing run is resumed: the trainer says so
    resolve_device(args.device)
    if launched() > 1 and args.model != "fsddim":
        raise SpikediffError(f"data-parallel training (torchrun) is for --model fsddim; train {args.model} in one "
                             f"process")
    if args.model != "fsddim" and (args.arch != "patch" or args.amp is not None):
        raise SpikediffError("--arch and --amp are fsddim options")
    if args.snn_steps is None and args.arch == "patch":
        args.snn_steps = DenoiserConfig().num_steps  # every model's default T but the U-Net presets'
    own = {"latent-ddim": ("resume_from", "init", "decay_steps", "qat_from"),
           "latent-decoder": ("resume_from", "init", "decay_steps", "qat_from"),
           "spiking-vq": ("resume_from", "init", "decay_steps", "qat_from"),
           "fsddim": ("resume_from", "init", "decay_steps")}.get(args.model, ())
    for option in ("resume_from", "init", "decay_steps", "qat_from"):
        if option not in own and getattr(args, option) is not None:
            raise SpikediffError(f"--{option.replace('_', '-')} is not an option of --model {args.model}")
    for option in ("latent_noise", "decoder_channels", "adversarial", "adversarial_from"):
        if args.model != "latent-decoder" and getattr(args, option) is not None:
            raise SpikediffError(f"--{option.replace('_', '-')} is an option of --model latent-decoder")
    for option in ("sdid_channels", "vq_decay_steps"):
        if args.model != "spiking-vq" and getattr(args, option) is not None:
            raise SpikediffError(f"--{option.replace('_', '-')} is an option of --model spiking-vq")
    if args.model != "spiking-vq" and args.feedback:
        raise SpikediffError("--feedback is an option of --model spiking-vq")
    if args.model == "latent-ddim":
        return _train_latent(args)
    if args.model == "fsddim" and args.resume_from is not None:
        _check_resume_from(args.resume_from, "fsddim")  # now, not after the training set is loaded
    if args.model == "latent-decoder":
        return _train_latent_decoder(args)
    if args.model == "spiking-vq":
        if args.lateral or args.selection:
            raise SpikediffError("--lateral and --selection extend the fsddim denoiser; drop them or use --model "
                                 "fsddim")
        return _train_spiking_vq(args)
    from .models import DenoiserConfig
    from .train import TrainConfig, train

    if args.arch != "patch":
        return _train_unet(args)
    d = DenoiserConfig()
    model = DenoiserConfig(channels=args.channels or d.channels, hidden=args.hidden or d.hidden,
                           num_steps=args.snn_steps, time_features=args.time_features or d.time_features, beta=args.beta,
                           threshold=args.threshold, readout_alpha=args.readout_alpha, lateral=args.lateral,
                           selection=args.selection, groups=args.groups, local_weight=args.local_weight,
                           lateral_decay=args.lateral_decay)
    cfg = TrainConfig(**_train_options(args, TrainConfig), **_decay_options(args), prediction_type=args.prediction,
                      model=model, amp=args.amp, init=args.init)
    from dataclasses import replace

    from .data.datasets import image_size
    from .models import SpikingDenoiser

    size = image_size(args.data)
    _check_training_size(args, [lambda: SpikingDenoiser(replace(model, image_size=size))], size * size)
    _check_init(args, lambda: SpikingDenoiser(replace(model, image_size=size)))
    return _run_training(train, cfg, args, "", resume_from=args.resume_from)


def _train_unet(args) -> int:
    """``--arch tiny|small|fsddim``: a spiking U-Net preset, its options overridden by those given."""
    from .data.datasets import image_size
    from .models.unet import SpikingUNet, preset, sized
    from .train import TrainConfig, train

    if args.lateral or args.selection or args.hidden is not None:
        raise SpikediffError("--lateral, --selection and --hidden are options of the patch denoiser (--arch patch)")
    model = preset(args.arch, channels=args.channels, blocks=args.blocks, num_steps=args.snn_steps,
                   time_features=args.time_features, beta=args.beta, threshold=args.threshold,
                   readout_alpha=args.readout_alpha).validate()
    cfg = TrainConfig(**_train_options(args, TrainConfig), **_decay_options(args), prediction_type=args.prediction,
                      model=model, amp=args.amp, init=args.init)
    size = model.padded_size(image_size(args.data))
    _check_training_size(args, [lambda: SpikingUNet(sized(model, image_size(args.data)))], size * size)
    _check_init(args, lambda: SpikingUNet(sized(model, image_size(args.data))))
    return _run_training(train, cfg, args, "", resume_from=args.resume_from)


def _check_init(args, make_model) -> None:
    """A pixel denoiser's ``--init``, checked against the network the options declare before a fresh run starts
    (a resumed run does not read it)."""
    if args.init is not None and args.resume_from is None and not (Path(args.out) / "last.pt").exists():
        from .train.trainer import init_weights

        init_weights(args.init, make_model())


def _train_options(args, config_class) -> dict:
    """The training options both model kinds share, from the command line (a config class's defaults
    where an option is not given)."""
    return dict(data=args.data, steps=args.steps or config_class.steps,
                batch_size=args.batch_size or config_class.batch_size,
                lr=config_class.lr if args.lr is None else args.lr,
                warmup=config_class.warmup if args.warmup is None else args.warmup,
                ema_decay=args.ema_decay, seed=args.seed, data_limit=args.data_limit,
                checkpoint_every=args.checkpoint_every, device=args.device)


def _decay_options(args) -> dict:
    """The pixel trainer's learning-rate decay, from the command line."""
    from .train import TrainConfig

    return dict(decay_steps=args.decay_steps, lr_min=TrainConfig.lr_min if args.lr_min is None else args.lr_min)


def _check_resume_from(path: Path, kind: str) -> None:
    """``--resume-from`` is a compact resume file of a run of this kind, checked before any work."""
    from .checkpoint import load_model, load_raw

    ckpt = load_raw(path)
    if "ema_half" not in ckpt:
        raise SpikediffError(f"--resume-from {path}: not a compact resume file (a run's resume.pt)")
    if (ckpt.get("kind") or "fsddim") != kind:
        raise SpikediffError(f"--resume-from {path}: the resume.pt of a {ckpt.get('kind') or 'fsddim'} run, not of a "
                             f"{kind} run")
    load_model(path)


def _interrupt_status(exc: KeyboardInterrupt) -> int:
    """128 + the signal that stopped the run (``KeyboardInterrupt(signum)``; a plain one is Ctrl-C)."""
    signum = exc.args[0] if exc.args and isinstance(exc.args[0], int) else int(signal.SIGINT)
    return 128 + signum


def _run_training(train_fn, cfg, args, where: str, **options) -> int:
    from .train.distributed import launched

    try:
        path = train_fn(cfg, args.out, progress=not args.quiet, **options)
    except KeyboardInterrupt as exc:
        return _interrupt_status(exc)
    if launched() <= 1 or os.environ.get("RANK", "0") == "0":
        print(f"checkpoint: {path}{where}")
    return 0


def _check_latent_inputs(args) -> None:
    """The checkpoints a latent-ddim run reads, loaded and checked now: the run reaches --resume-from and
    --init only after encoding the training set with the autoencoder, minutes in."""
    from .checkpoint import load_model, resolve
    from .models import SpikingVQDiffusion

    autoencoder = args.autoencoder or f"{args.data}-vq"
    if not isinstance(load_model(resolve(autoencoder))[0], SpikingVQDiffusion):
        raise SpikediffError(f"--autoencoder {autoencoder}: not a spiking-vq checkpoint (its VQ-SVAE is the "
                             f"autoencoder)")
    if args.init is not None and load_model(resolve(args.init))[2].get("kind") != "latent-ddim":
        raise SpikediffError(f"--init {args.init}: not a latent-ddim checkpoint")
    if args.resume_from is not None:
        _check_resume_from(args.resume_from, "latent-ddim")


def _train_latent(args) -> int:
    from .models.latent_denoiser import LatentDenoiserConfig
    from .train.latent_trainer import LatentTrainConfig, train_latent_ddim

    _check_latent_inputs(args)

    d = LatentDenoiserConfig()
    model = LatentDenoiserConfig(channels=args.channels or d.channels, hidden=args.hidden or d.hidden,
                                 blocks=args.blocks or 2, num_steps=args.snn_steps,
                                 time_features=args.time_features or d.time_features, beta=args.beta,
                                 threshold=args.threshold, readout_alpha=args.readout_alpha)
    cfg = LatentTrainConfig(**_train_options(args, LatentTrainConfig), prediction_type=args.prediction,
                            autoencoder=args.autoencoder or f"{args.data}-vq",
                            lr_min=LatentTrainConfig.lr_min if args.lr_min is None else args.lr_min,
                            decay_steps=args.decay_steps, snap=args.snap, qat_from=args.qat_from, model=model)
    from .models.latent_denoiser import SpikingLatentDenoiser

    _check_training_size(args, [lambda: SpikingLatentDenoiser(model)], model.latent_channels * model.grid ** 2)
    try:
        path = train_latent_ddim(cfg, args.out, progress=not args.quiet, resume_from=args.resume_from,
                                 init=args.init)
    except KeyboardInterrupt as exc:
        return _interrupt_status(exc)
    print(f"checkpoint: {path}")
    return 0


def _train_latent_decoder(args) -> int:
    from .train.decoder_trainer import DecoderTrainConfig, load_sampler, train_latent_decoder

    if args.init is None:
        raise SpikediffError("--model latent-decoder needs --init: the latent-ddim or spiking-vq sampler whose "
                             "decoder to train")
    load_sampler(args.init)  # refused now rather than after the training set is encoded
    if args.resume_from is not None:
        _check_stage_resume_from(args.resume_from, "decoder")
    cfg = DecoderTrainConfig(**_train_options(args, DecoderTrainConfig), init=args.init,
                             lr_min=DecoderTrainConfig.lr_min if args.lr_min is None else args.lr_min,
                             decay_steps=args.decay_steps, latent_noise=args.latent_noise or 0.0,
                             decoder_channels=args.decoder_channels, qat_from=args.qat_from,
                             adversarial=args.adversarial, adversarial_from=args.adversarial_from)
    return _run_training(train_latent_decoder, cfg, args,
                         f" (the --init sampler with the trained decoder; the decoder's run is in {args.out}/decoder)",
                         resume_from=args.resume_from)


def _check_stage_resume_from(path: Path, stage: str | tuple) -> None:
    """A stage run's ``--resume-from`` (the decoder's, an ``--init`` run's SDID, a two-stage run's VQ-SVAE) is
    its compact resume file (``OUT/STAGE/resume.pt``), checked now; that it belongs to the same ``--init`` and
    options is checked once the run knows them."""
    from .checkpoint import load_raw

    stages = (stage,) if isinstance(stage, str) else stage
    ckpt = load_raw(path)
    if "ema_half" not in ckpt or not str(ckpt.get("kind", "")).endswith(tuple(f":{s}" for s in stages)):
        raise SpikediffError(f"--resume-from {path}: not the compact resume file of a {' or '.join(stages)} run "
                             f"({' or '.join(f'OUT/{s}/resume.pt' for s in stages)})")


def _train_spiking_vq(args) -> int:
    from .models import TokenDenoiserConfig, VQConfig
    from .train.vq_trainer import VQTrainConfig, load_init, train_spiking_vq

    if args.init is not None:
        load_init(args.init)  # refused now rather than after the training set is loaded
    if args.resume_from is not None:  # an --init run has only the SDID stage; a two-stage run moves in either
        _check_stage_resume_from(args.resume_from, "sdid" if args.init else ("vq", "sdid"))
    v, d = VQConfig(), TokenDenoiserConfig()
    neuron = dict(num_steps=args.snn_steps, beta=args.beta, threshold=args.threshold, readout_alpha=args.readout_alpha)
    vq = VQConfig(channels=args.channels or v.channels, codebook_size=args.codebook_size, code_dim=args.code_dim, **neuron)
    widths = dict(sdid_channels=args.sdid_channels, sdid_hidden=args.hidden,
                  sdid_feedback=args.feedback or None) if args.init else {}
    sdid = TokenDenoiserConfig(channels=args.sdid_channels or d.channels, hidden=args.hidden or d.hidden,
                               feedback=args.feedback,
                               time_features=args.time_features or d.time_features, **neuron)
    cfg = VQTrainConfig(**_train_options(args, VQTrainConfig), vq_steps=args.vq_steps, decay_steps=args.decay_steps,
                        vq_decay_steps=args.vq_decay_steps,
                        lr_min=VQTrainConfig.lr_min if args.lr_min is None else args.lr_min,
                        mask_schedule=args.mask_schedule, vq=vq, sdid=sdid, init=args.init, qat_from=args.qat_from,
                        **widths)
    from dataclasses import replace

    from .data.datasets import image_size
    from .models import SpikingTokenDenoiser, SpikingVQVAE

    vq_sized = replace(vq, image_size=image_size(args.data))
    _check_training_size(args, [lambda: SpikingVQVAE(vq_sized), lambda: SpikingTokenDenoiser(
        replace(sdid, codebook_size=vq.codebook_size, grid=vq_sized.grid))], vq_sized.image_size ** 2)
    runs = f"the SDID's run is in {args.out}/sdid" if args.init else \
        f"the stages' runs are in {args.out}/vq and {args.out}/sdid"
    return _run_training(train_spiking_vq, cfg, args, f" (VQ-SVAE and SDID; {runs})", resume_from=args.resume_from)


def _print_spike_table(neurons: dict, spikes_per_image: dict, updates_per_neuron: int, footer: str) -> None:
    print(f"{'layer':8s} {'neurons':>8s} {'spikes/image':>13s} {'rate':>6s}")
    for name, count in neurons.items():
        print(f"{name:8s} {count:8d} {spikes_per_image[name]:13.0f} {spikes_per_image[name] / (count * updates_per_neuron):6.3f}")
    print(f"{'total':8s} {sum(neurons.values()):8d} {sum(spikes_per_image.values()):13.0f}   {footer}")


class _Sampler:
    """What a CKPT argument names: a checkpoint (a model: every backend) or a sampler's NIR file (Lava and the
    simulator), its kind, and its graphs, exported once."""

    def __init__(self, arg):
        from .checkpoint import load_model, resolve
        from .diffusion import kinds

        self.path = resolve(arg)
        self.model = self.schedule = self.ckpt = None
        if self.path.suffix == ".nir":
            from .export.nir_graph import read_sampler

            self._graphs = read_sampler(self.path)
            self.kind = kinds.of_metadata(dict(self._graphs["denoiser"].metadata or {}))
        else:
            self.model, self.schedule, self.ckpt = load_model(self.path)
            self.kind = kinds.of_model(self.model)
            self._graphs = None

    @property
    def graphs(self) -> dict:
        if self._graphs is None:
            from .export.nir_graph import sampler_graphs

            # compact: a U-Net's derived kernels held as their natural ones; Lava's float path runs them so (the
            # paper's width fits), fixed point makes them dense first (the same integers as the exported files)
            self._graphs = sampler_graphs(self.model, self.schedule, compact=True)
        return self._graphs

    def need_model(self, what: str):
        if self.model is None:
            raise SpikediffError(f"{what} needs a checkpoint; {self.path} is a NIR file (use --backend lava or sim)")
        return self.model

    def compile(self, fixed_point: bool):
        from .export.deployment import compile_sampler

        return compile_sampler(self.graphs, fixed_point=fixed_point)


def cmd_sample(args) -> int:
    from .images import check_png_path, save_grid

    args.output = check_png_path(args.output)
    if args.fixed_point and args.backend != "lava":
        raise SpikediffError("--fixed-point needs --backend lava (the torch backend is the float model)")
    counters = args.output.with_suffix(".counters.json") if args.backend == "lava" else None
    _check_outputs([(args.output, "output", False), (counters, "output", False)], args.quiet)
    sampler = _Sampler(args.checkpoint)
    if sampler.model is not None:
        _check_images_memory(args.num, sampler.model.image_shape, f"-n {args.num}")
    options = sampler.kind.options(temperature=args.temperature, solver=args.solver, unmask=args.unmask)
    if args.backend == "lava":
        return _sample_lava(args, sampler, options)
    import torch

    from .train.trainer import resolve_device

    model = sampler.need_model("--backend torch")
    stats: dict = {}
    images = sampler.kind.sample_torch(model, sampler.schedule, args.num, args.steps, seed=args.seed,
                                       batch_size=args.batch_size, device=resolve_device(args.device),
                                       progress=not args.quiet, stats=stats, **options)
    out = save_grid(torch.as_tensor(images), args.output)
    print(f"wrote {len(images)} samples to {out}")
    if not args.quiet:
        networks = sampler.kind.networks(model)
        for role, (net, _extra) in networks.items():
            t = net.config.num_steps
            counts = net.neuron_counts()
            calls = args.steps if role == "denoiser" else 1
            what = f"{calls} {sampler.kind.step_name}" if role == "denoiser" else "one pass"
            _print_spike_table(counts, {k: stats.get(k, 0.0) / args.num for k in counts}, calls * t,
                               f"({role + ': ' if len(networks) > 1 else ''}{what} x T={t})")
    return 0


def _say_where_lava_runs(args) -> None:
    from .runtime.session import loihi2_available

    if args.lava_target == "auto" and not loihi2_available() and not args.quiet:
        print("Intel's Lava extension for Loihi is not installed: running on Lava's CPU simulator (Loihi2SimCfg)")


def _sample_lava(args, sampler, options) -> int:
    import torch

    from .atomic import write_json_atomic
    from .images import check_png_path, save_grid
    from .runtime.counters import counters_report
    from .runtime.run import sample_lava

    _say_where_lava_runs(args)
    sd = sampler.compile(args.fixed_point)  # compiled once: Lava and the simulator run the same integers
    profilers = None
    if args.measure:
        from .export.pipeline import Pipeline
        from .runtime.loihi2 import Profilers
        from .runtime.session import loihi2_available

        if args.lava_target == "sim" or not loihi2_available():
            raise SpikediffError("--measure reads a Loihi 2 chip's power, time and activity (loihi2_profiler): it needs "
                                 "Intel's lava-loihi extension and --lava-target loihi2 or auto")
        t = sd.loop.timing
        profilers = Profilers(Pipeline(args.num, args.steps, t.num_steps, t.period, t.window).lava_steps + 1)
    result = sample_lava(sd, args.num, args.steps, seed=args.seed, target=args.lava_target, progress=not args.quiet,
                         profilers=profilers, **options)
    if profilers is not None:
        measured = profilers.summary(args.num, result["pipeline"].lava_steps + 1)
        path = write_json_atomic(measured, check_png_path(args.output).with_suffix(".loihi2.json"))
        print(f"Loihi 2: {measured['energy_per_image_J'] * 1e3:.4g} mJ and {measured['time_per_image_s'] * 1e3:.4g} "
              f"ms per image (the denoising loop; {path})")
    out = save_grid(torch.from_numpy(result["images"]), args.output)
    report = counters_report(result)
    report["kind"] = sd.kind.name
    exact = True
    if args.fixed_point:  # a deployment is only as good as its exactness: check it against the simulator
        from .hardware_sim.sampler import same_as_lava, sample_sim

        exact = same_as_lava(sample_sim(sd, args.num, args.steps, seed=args.seed, **options), result)
        report["bit_exact_vs_simulator"] = exact
    counters_path = write_json_atomic(report, out.with_suffix(".counters.json"))
    print(f"wrote {args.num} samples to {out} and counters to {counters_path}")
    if not args.quiet:
        pops = report["populations"]
        net = result["network"]
        _print_spike_table({k: v["neurons"] for k, v in pops.items()},
                           {k: v["spikes_in_active_steps_per_image"] for k, v in pops.items()},
                           args.steps * net.num_steps,
                           f"({args.steps} {sd.kind.step_name} x T={net.num_steps}; Lava: {report['images_in_flight']} "
                           f"images in flight, one evaluation every {report['period']} steps, {report['lava_steps']} "
                           f"steps in all)")
        if result["final_network"] is not None:
            fin = report["decoder"]
            _print_spike_table({k: v["neurons"] for k, v in fin.items()}, {k: v["spikes_per_image"] for k, v in fin.items()},
                               result["final_network"].num_steps,
                               f"(decoder on Lava: one pass x T={result['final_network'].num_steps})")
    if args.fixed_point:
        what = "tokens, images" if "tokens" in result else "images"
        print(f"fixed point: {what} and spike counts " + ("identical to spikediff's bit-exact simulator" if exact else
              "DIFFER from spikediff's bit-exact simulator (please report this)"))
        if not exact:
            return 1
    return 0


def cmd_export(args) -> int:
    for path in (args.onnx, args.onnx_twin):
        if path is not None and path.suffix != ".onnx":
            raise SpikediffError(f"output {path}: must end in .onnx")
    if args.output.suffix != ".nir":
        raise SpikediffError(f"output {args.output}: NIR files end in .nir")
    _check_outputs([(args.output, "output", False), (args.onnx, "--onnx", False),
                    (args.onnx_twin, "--onnx-twin", False), (args.netx_dir, "--netx-dir", True)])
    from .checkpoint import load_model
    from .diffusion import kinds
    from .export.nir_graph import export_sampler

    model, schedule, _ = load_model(args.checkpoint)
    kind = kinds.of_model(model)
    networks = kind.networks(model)
    for path in export_sampler(model, schedule, args.output):
        print(f"wrote {path}")
    for path, twin in ((args.onnx, False), (args.onnx_twin, True)):
        if path is None:
            continue
        from .export.onnx_export import export_onnx

        for role, (net, _extra) in networks.items():
            target = path if len(networks) == 1 else path.with_suffix(f".{role}.onnx")
            what = "ANN twin (ReLU, one pass)" if twin else f"spiking {role} unrolled over T={net.config.num_steps}"
            print(f"wrote {export_onnx(net, target, twin=twin)} (ONNX, {what}; onnx.checker passed)")
    if args.netx_dir is not None:
        from .export.deployment import compile_sampler
        from .export.netx_hdf5 import export_chains
        from .export.nir_graph import sampler_graphs

        sd = compile_sampler(sampler_graphs(model, schedule), fixed_point=True)
        for role, dep in sd.networks.items():
            for path in export_chains(dep, args.netx_dir / role if len(sd.networks) > 1 else args.netx_dir):
                print(f"wrote {path} (lava-dl netx, Loihi fixed point)")
    return 0


def _checkpoint_and_output(args, folder: str):
    """CKPT may be a training run directory: then its EMA checkpoint, with the output inside it by default."""
    from .checkpoint import resolve

    ckpt, out = resolve(args.checkpoint), args.output
    if ckpt.is_dir():
        return ckpt / "model.pt", out or ckpt / folder
    return ckpt, out


def _load_inputs(path, what: str = "--input"):
    """An .npy file of host inputs (no pickles)."""
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise SpikediffError(f"{what} {path}: no such file" if not path.exists() else f"{what} {path}: not a regular file")
    try:
        x = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise SpikediffError(f"{what} {path}: not a readable .npy array ({type(exc).__name__})") from None
    if not np.issubdtype(x.dtype, np.number) and x.dtype != bool:
        raise SpikediffError(f"{what} {path}: holds {x.dtype} values, not numbers")
    if not np.all(np.isfinite(x)):
        raise SpikediffError(f"{what} {path}: holds non-finite values (NaN or inf)")
    return x.astype(np.float64)


def _compile_graph_with_input(args):
    """(deployment, inputs (N, T, ...) or (N, ...)) for a NIR file and an --input array."""
    from .export.deployment import compile_graph
    from .export.nir_graph import read_graph

    graph = read_graph(args.graph)
    x = _load_inputs(args.input)
    from .export.deployment import graph_dt
    from .export.plan import plan as make_plan

    p = make_plan(graph, graph_dt(graph, args.dt))
    shape = p.inputs[p.input] if len(p.inputs) == 1 else None
    if shape is None:
        raise SpikediffError(f"NIR file {args.graph}: has {len(p.inputs)} Input nodes; --input feeds one (use the "
                             f"Python API, runtime.run.run_windows, for several)")
    if x.shape == tuple(shape) or (x.ndim == len(shape) + 1 and tuple(x.shape[1:]) == tuple(shape)):
        x = x[None] if x.shape == tuple(shape) else x  # (T, ...) : one inference
        x = x[None] if x.ndim == len(shape) + 1 else x
    if x.ndim != len(shape) + 2 or tuple(x.shape[2:]) != tuple(shape):
        raise SpikediffError(f"--input {args.input}: shape {x.shape}; the graph's input {p.input!r} has shape "
                             f"{tuple(shape)}: give (T, {', '.join(map(str, shape))}) or (N, T, "
                             f"{', '.join(map(str, shape))})")
    calibration = x if args.fixed_point else None  # input scales and readout bias correction from the run's inputs
    dep = compile_graph(graph, fixed_point=args.fixed_point, num_steps=x.shape[1], calibration=calibration,
                        strict=args.strict, dt=args.dt)
    return dep, x


def cmd_report(args) -> int:
    from .hardware_sim.profiles import parse_overrides

    if args.checkpoint is not None and str(args.checkpoint).endswith(".nir"):
        return _report_graph(args)
    if args.checkpoint is not None and str(args.checkpoint).endswith(NETX_SUFFIXES):
        return _report_netx(args)
    if args.input_bias is not None:
        raise SpikediffError("--input-bias is for lava-dl netx networks (spikediff report NETWORK.net --input-bias "
                             "FRAME.npy)")
    if args.input is not None:
        raise SpikediffError("--input is for NIR graphs (spikediff report GRAPH.nir --input X.npy); a sampler makes "
                             "its own inputs")
    from .checkpoint import load_model
    from .hardware_sim.report import make_report

    ckpt, out = _checkpoint_and_output(args, "report")
    parse_overrides(args.set)  # a bad --set fails before any work
    _check_outputs([(out or Path("report"), "report folder", True)], args.quiet)
    model, schedule, _ = load_model(ckpt)
    _check_images_memory(args.num, model.image_shape, f"-n {args.num}")
    result = make_report(model, schedule, out_dir=out or Path("report"), n=args.num, steps=args.steps,
                         profiles=args.profile or None, overrides=parse_overrides(args.set), device=args.device,
                         seed=args.seed, batch_size=args.batch_size, compare_float=not args.no_float,
                         progress=not args.quiet, source=str(ckpt), temperature=args.temperature,
                         solver=args.solver, unmask=args.unmask)
    _print_costs(result, args.quiet)
    return 0


def _print_costs(result: dict, quiet: bool) -> None:
    if not quiet:
        per = result.get("per", "image")
        print(f"{'profile':12s} {'energy/' + per:>16s} {'time/' + per:>14s} {'cores':>6s} {'chips':>5s}")
        for c in result["cost"]:
            m = result["chips"].get(c["profile"])
            t = c.get("time", {}).get("per_image_s")
            print(f"{c['profile']:12s} {c['energy_per_image_J'] * 1e3:13.4g} mJ "
                  f"{(f'{t * 1e3:11.3g} ms') if t else '-':>14s} {m['cores'] if m else '-':>6} {m['chips'] if m else '-':>5}")
    print(f"wrote {result['dir']}/report.md, report.json and figures")


def _report_graph(args) -> int:
    from .hardware_sim.profiles import parse_overrides
    from .hardware_sim.report import make_graph_report

    if args.input is None:
        raise SpikediffError(f"spikediff report {args.checkpoint}: a NIR graph needs --input X.npy (what to play "
                             f"through it: (T, ...) or (N, T, ...))")
    args.graph, args.fixed_point = args.checkpoint, True
    dep, x = _compile_graph_with_input(args)
    result = make_graph_report(dep, x, out_dir=args.output or Path("report"), profiles=args.profile or None,
                               overrides=parse_overrides(args.set), device=args.device, source=str(args.graph),
                               progress=not args.quiet)
    _print_costs(result, args.quiet)
    return 0


NETX_SUFFIXES = (".net", ".h5", ".hdf5")


def _report_netx(args) -> int:
    """``spikediff report NETWORK.net``: a lava-dl netx network with its own integers (``export.netx_read``);
    ``--input`` (T, ...) or (N, T, ...) into its input layer, ``--input-bias`` a frame written into that layer's
    bias (as lava-dl's benchmarks drive PilotNet); neither: one inference of T = the file's tSample steps."""
    import numpy as np

    from .export.netx_read import read_netx, to_deployment
    from .hardware_sim.profiles import parse_overrides
    from .hardware_sim.report import make_graph_report

    net = read_netx(args.checkpoint)
    bias = _load_inputs(args.input_bias, "--input-bias") if args.input_bias is not None else None
    shape = tuple(net.input_shape)
    if args.input is not None:
        x = _load_inputs(args.input)
        x = x[None] if x.ndim == len(shape) + 1 else x
        if x.ndim != len(shape) + 2 or tuple(x.shape[2:]) != shape:
            raise SpikediffError(f"--input {args.input}: shape {x.shape}; {args.checkpoint} takes (T, "
                                 f"{', '.join(map(str, shape))}) or (N, T, {', '.join(map(str, shape))})")
        steps = x.shape[1]
    else:
        steps = net.steps
        if not steps:
            raise SpikediffError(f"{args.checkpoint}: the file gives no tSample; pass --input (T, ...) to set T")
        x = np.zeros((1, steps, *shape))
    dep = to_deployment(net, num_steps=steps, input_bias=bias)
    result = make_graph_report(dep, x, out_dir=args.output or Path("report"), profiles=args.profile or None,
                               overrides=parse_overrides(args.set), device=args.device, source=str(args.checkpoint),
                               progress=not args.quiet)
    _print_costs(result, args.quiet)
    return 0


def cmd_eval(args) -> int:
    from .checkpoint import load_model, trained_on
    from .diffusion import kinds
    from .metrics.evaluation import evaluate

    ckpt, out = _checkpoint_and_output(args, "eval")
    _check_outputs([(out or Path("eval"), "eval folder", True)], args.quiet)
    model, schedule, raw = load_model(ckpt)
    _check_images_memory(args.num, model.image_shape, f"-n {args.num}")
    kind = kinds.of_model(model)
    options = kind.options(temperature=args.temperature, solver=args.solver, unmask=args.unmask)
    data = args.data or trained_on(raw) or "mnist"
    from .data.datasets import ALL_NAMES

    if data not in ALL_NAMES:
        raise SpikediffError(f"checkpoint {ckpt}: trained on {data!r}, not a dataset spikediff knows; pass --data")
    r = evaluate(model, schedule, out or Path("eval"), data, args.num, args.steps, args.backend, seed=args.seed,
                 ref_split=args.ref_split, ref_n=args.ref_n, device=args.device, progress=not args.quiet,
                 source=str(ckpt), **options)
    extra = "".join(f", {k} {v:g}" if isinstance(v, float) else f", {k} {v}" for k, v in options.items())
    print(f"FID {r['fid']:.2f}  KID {r['kid'] * 1e3:.2f} +- {r['kid_std'] * 1e3:.2f} (x1e-3)  "
          f"{r['n']} samples ({args.backend}, {args.steps} steps{extra}) against {r['reference']}")
    print(f"wrote {r['json']}")
    return 0


def cmd_inspect(args) -> int:
    from .inspect import inspect_path

    print(inspect_path(args.path, fixed_point=args.fixed_point, strict=args.strict, dt=args.dt,
                       num_steps=args.snn_steps, target=args.target))
    return 0


def cmd_run(args) -> int:
    from .export.layout import lava_shape  # noqa: F401  (a light import: fail early on a broken install)
    from .run_graph import run_graph

    dep, x = _compile_graph_with_input(args)
    result = run_graph(dep, x, backend=args.backend, out_dir=args.output, progress=not args.quiet,
                       source=str(args.graph))
    print(f"wrote {result['outputs']} and {result['counters']}")
    if not args.quiet:
        for pop, info in result["summary"]["populations"].items():
            print(f"{pop:16s} {info['neurons']:8d} neurons  {info['spikes_per_inference']:12.1f} spikes/inference")
    return 0


class _Parser(argparse.ArgumentParser):
    """A usage error is one line, ``spikediff: error: ...`` with exit status 2, like every other bad input (the
    usage text of a subcommand buries the message; ``--help`` shows it)."""

    def error(self, message: str):
        message = " ".join(message.split())
        self.exit(2, f"spikediff: error: {message} (see {self.prog} --help)\n")


class _DefaultsHelp(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except "None" (options whose default depends on others say so in their help)."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    from .checkpoint import SHIPPED_MODELS
    from .data.datasets import ALL_NAMES, DATASETS
    from .diffusion.absorbing import DEFAULT_TEMPERATURE, UNMASK_ORDERS
    from .diffusion.sampler import DEFAULT_INFERENCE_STEPS
    from .diffusion.schedule import PREDICTION_TYPES
    from .diffusion.solvers import SOLVERS
    from .models import DenoiserConfig
    from .runtime.session import TARGETS
    from .train import TrainConfig

    ckpt_help = f"checkpoint .pt, or a shipped model by name: {', '.join(SHIPPED_MODELS)} (default: mnist)"

    parser = _Parser(prog="spikediff", description=__doc__)
    parser.add_argument("--version", action="version", version=f"spikediff {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="fetch and inspect datasets")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    fetch = data_sub.add_parser("fetch", help="fetch, verify and store datasets")
    fetch.add_argument("names", nargs="+", choices=list(DATASETS))
    fetch.add_argument("--from", dest="from_dir", type=Path, help="directory holding the official IDX files")
    fetch.add_argument("--root", type=Path, help="data directory (default $SPIKEDIFF_DATA or ~/.cache/spikediff/data)")
    fetch.add_argument("--force", action="store_true", help="fetch again even if present")
    fetch.set_defaults(func=cmd_data_fetch)
    info = data_sub.add_parser("info", help="list datasets and what is present")
    info.add_argument("--root", type=Path)
    info.set_defaults(func=cmd_data_info)

    # Defaults come from the config dataclasses, so the CLI and the Python API cannot drift apart.
    from .diffusion.absorbing import MASK_SCHEDULES
    from .models import TokenDenoiserConfig, VQConfig
    from .models.unet import PRESETS as UNET_PRESETS
    from .train.decoder_trainer import ADVERSARIAL_FROM, DecoderTrainConfig
    from .train.vq_trainer import VQTrainConfig

    unmask_help = ("spiking-vq: which cells each step unmasks: random (default), or confidence (MaskGIT's: those "
                   "whose drawn tokens the denoiser is surest of)")
    t, m, v, d, vt = TrainConfig(), DenoiserConfig(), VQConfig(), TokenDenoiserConfig(), VQTrainConfig()
    dt = DecoderTrainConfig()
    tr = sub.add_parser("train", help="train a spiking diffusion model (resumes if OUT holds a run)",
                        formatter_class=_DefaultsHelp)
    tr.add_argument("--model", default="fsddim", choices=MODELS,
                    help="fsddim: FSDDIM-style spiking DDPM denoiser; spiking-vq: Spiking-Diffusion (VQ-SVAE, then "
                         "absorbing diffusion over its tokens with the SDID denoiser); latent-ddim: DDIM over a "
                         "spiking-vq autoencoder's latents; latent-decoder: train a latent-ddim or spiking-vq "
                         "sampler's decoder on its frozen encoder's latents (spiking-vq: their tokens)")
    tr.add_argument("--arch", default="patch", choices=("patch",) + tuple(UNET_PRESETS),
                    help="fsddim: patch is the small patch-readout denoiser; tiny, small and fsddim are spiking U-Net "
                         "presets (fsddim: the published FSDDIM, 128 channels x 1 2 3 4, T = 8; see "
                         "spikediff/models/unet.py)")
    tr.add_argument("--amp", choices=("bf16", "fp16"), help="mixed precision on CUDA (fsddim)")
    tr.add_argument("--data", default=t.data, choices=ALL_NAMES)
    tr.add_argument("--out", type=Path, required=True, help="run directory (last.pt, model.pt, log.jsonl)")
    tr.add_argument("--steps", type=_positive_int, help=f"optimizer steps in total (spiking-vq: of the SDID stage) "
                                                        f"[default: {t.steps}; spiking-vq {vt.steps}]")
    tr.add_argument("--batch-size", type=_positive_int, help=f"[default: {t.batch_size}; spiking-vq {vt.batch_size}]")
    tr.add_argument("--lr", type=_interval(0, 1, False, False),
                    help=f"[default: {t.lr}; latent-decoder {dt.lr}]")
    tr.add_argument("--warmup", type=_non_negative_int, help=f"[default: {t.warmup}; latent-decoder {dt.warmup}]")
    tr.add_argument("--ema-decay", type=_interval(0, 1, True, False), default=t.ema_decay)
    tr.add_argument("--prediction", default=t.prediction_type, choices=PREDICTION_TYPES,
                    help="fsddim training target (why v: see spikediff/train/trainer.py)")
    tr.add_argument("--channels", type=_positive_int,
                    help=f"fsddim: full-resolution width C (the strided and decoder layers have 2C) [default: "
                         f"{m.channels}]; spiking-vq: the VQ-SVAE's C (latent-grid layers 2C) [default: {v.channels}]")
    tr.add_argument("--hidden", type=_positive_int, help=f"neurons of the dense (global) layer [default: {m.hidden}; "
                                                         f"spiking-vq SDID {d.hidden}]")
    tr.add_argument("--snn-steps", type=_positive_int, help=f"T, SNN steps per denoiser call [default: {m.num_steps}; "
                                                          f"the --arch preset's]")
    tr.add_argument("--time-features", type=_positive_int, help=f"[default: {m.time_features}; latent-ddim 16]")
    tr.add_argument("--beta", type=_decay("beta"), default=m.beta,
                    help="membrane decay (1 - Lava dv), multiple of 1/4096")
    tr.add_argument("--threshold", type=_positive_float, default=m.threshold)
    tr.add_argument("--readout-alpha", type=_decay("readout_alpha"), default=m.readout_alpha,
                    help="readout current decay (1 - Lava du)")
    vqo = tr.add_argument_group("spiking-vq options")
    vqo.add_argument("--vq-steps", type=_positive_int, default=vt.vq_steps, help="optimizer steps of the VQ-SVAE stage")
    vqo.add_argument("--vq-decay-steps", type=_positive_int,
                     help="cosine learning-rate decay of the VQ-SVAE stage to --lr-min at this step [default: none, "
                          "constant]")
    vqo.add_argument("--codebook-size", type=_positive_int, default=v.codebook_size, help="K, codes in the codebook")
    vqo.add_argument("--code-dim", type=_positive_int, default=v.code_dim, help="D, dimensions of a code vector")
    vqo.add_argument("--sdid-channels", type=_positive_int,
                     help=f"width of the SDID's grid layers [default: {d.channels}]; with --init, the init's SDID is "
                          f"widened to it (and its dense layer to --hidden), starting as the init's")
    vqo.add_argument("--feedback", action="store_true",
                     help="the SDID's dense layer also drives its last grid layer (global context in every cell's "
                          "features, not only added to its logits); with --init, added to the init's SDID, silent "
                          "at first")
    vqo.add_argument("--mask-schedule", default=vt.mask_schedule, choices=MASK_SCHEDULES,
                     help="masked fraction over the sampling steps (training draws from the same)")
    ld = tr.add_argument_group("latent-ddim options (--init also for fsddim, latent-decoder and spiking-vq; "
                               "--qat-from also for the last two)")
    ld.add_argument("--autoencoder", help="spiking-vq checkpoint whose VQ-SVAE encodes and decodes the latents "
                                          "[default: DATA-vq, the shipped one]")
    ld.add_argument("--blocks", type=_positive_int, help="residual blocks of the latent denoiser [default: 2], or per "
                                                         "level of an --arch U-Net [default: the preset's]")
    ld.add_argument("--snap", action="store_true", help="decode the nearest code vectors of a sampled latent")
    ld.add_argument("--decay-steps", type=_positive_int, help="cosine learning-rate decay to --lr-min at this step "
                                                              "(also fsddim; spiking-vq: of the SDID stage) "
                                                              "[latent-decoder default: --steps]")
    ld.add_argument("--lr-min", type=_interval(0, 1, True, False),
                    help="[default: 0.0001; latent-decoder 1e-05]")
    ld.add_argument("--resume-from", type=Path, help="a run's compact resume.pt: continue it in an empty --out "
                                                     "(latent-ddim and fsddim; latent-decoder: OUT/decoder/resume.pt, "
                                                     "spiking-vq: OUT/vq/resume.pt or OUT/sdid/resume.pt; "
                                                     "each with the run's --init and options)")
    ld.add_argument("--init", help="start from the weights of this latent-ddim checkpoint; fsddim: of this pixel "
                                   "denoiser, the same network as the options declare (T, beta and threshold may "
                                   "differ); latent-decoder: the "
                                   "latent-ddim or spiking-vq sampler whose decoder to train (OUT/model.pt is it with "
                                   "the new one); spiking-vq: the sampler whose SDID to fine-tune on its own VQ-SVAE "
                                   "(no VQ stage; the networks' options come from it)")
    ld.add_argument("--decoder-channels", type=_positive_int,
                    help="latent-decoder: a decoder of this width (its latent-grid layers; the VQ-SVAE stage's is "
                         "2 x --channels): wider, it starts as --init's, widened with its function unchanged; "
                         "narrower, untrained [default: --init's width]")
    ld.add_argument("--adversarial", type=_interval(0, 100, False, True), metavar="W",
                    help="latent-decoder: add a patch discriminator's verdict to the squared error, at W times the "
                         "weight that balances the two terms' gradients (VQGAN's adaptive weight), against blurred strokes")
    ld.add_argument("--adversarial-from", type=_nonnegative_int, metavar="STEP",
                    help="latent-decoder: the decoder feels the discriminator from this step on; it learns alone "
                         f"before [default: {ADVERSARIAL_FROM}]")
    ld.add_argument("--latent-noise", type=_interval(0, 10, True, True),
                    help="latent-decoder: Gaussian noise on the decoder's input latents, in latent standard deviations "
                         "[default: 0]")
    ld.add_argument("--qat-from", type=_nonnegative_int, help="quantization-aware training from this step on: the "
                                                            "denoiser (latent-decoder: the decoder; spiking-vq: the "
                                                            "SDID) trains on its Loihi fixed-point weights")
    lat = tr.add_argument_group("lateral-selection options (fsddim; the design: spikediff/models/lateral.py)")
    lat.add_argument("--lateral", action="store_true", help="a learnable lateral matrix: recurrent synapses within "
                                                             "the decoder layer, with its local plasticity objective")
    lat.add_argument("--selection", action="store_true", help="a spiking substructure-selection network gating the "
                                                               "decoder's channel groups (refined by the lateral "
                                                               "signal with --lateral)")
    lat.add_argument("--groups", type=_positive_int, default=m.groups, help="substructures: channel groups of the "
                                                                             "decoder layer")
    lat.add_argument("--local-weight", type=_non_negative_float, default=m.local_weight,
                     help="weight of the lateral matrix's local objective (0: backpropagation only)")
    lat.add_argument("--lateral-decay", type=_non_negative_float, default=m.lateral_decay,
                     help="weight decay in that objective")
    tr.add_argument("--seed", type=_seed, default=t.seed)
    tr.add_argument("--data-limit", type=_positive_int, help="use only the first N training images")
    tr.add_argument("--checkpoint-every", type=_positive_int, default=t.checkpoint_every)
    tr.add_argument("--device", default=t.device, help="auto, cpu, cuda or cuda:N")
    tr.add_argument("--quiet", action="store_true", help="no progress bar")
    tr.set_defaults(func=cmd_train)

    sa = sub.add_parser("sample", help="generate images from a checkpoint")
    sa.add_argument("checkpoint", nargs="?", type=Path, help=ckpt_help + "; or a sampler's NIR file (spikediff "
                                                                     "export)")
    sa.add_argument("--backend", default="torch", choices=["torch", "lava"],
                    help="torch: PyTorch; lava: the NIR export run on Lava (see --lava-target, --fixed-point)")
    sa.add_argument("-n", "--num", type=_positive_int, default=64, help="number of images")
    sa.add_argument("-o", "--output", type=Path, default=Path("samples.png"),
                    help="PNG grid to write, or a directory (samples.png and its counters go there)")
    sa.add_argument("--steps", type=_positive_int, default=DEFAULT_INFERENCE_STEPS,
                    help="DDIM denoising steps (spiking-vq: unmasking steps, at most the number of tokens)")
    sa.add_argument("--unmask", choices=UNMASK_ORDERS,
                    help=unmask_help)
    sa.add_argument("--temperature", type=_positive_float,
                    help=f"spiking-vq: softmax temperature of the token draws (default {DEFAULT_TEMPERATURE})")
    sa.add_argument("--solver", choices=SOLVERS, help="DDIM samplers: ddim (default), or diffusers' multistep dpm++ "
                                                     "(DPM-Solver++ 2M) or unipc, for fewer steps")
    sa.add_argument("--seed", type=_seed, default=0)
    sa.add_argument("--batch-size", type=_positive_int, default=64)
    sa.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (torch backend)")
    sa.add_argument("--lava-target", default="auto", choices=list(TARGETS),
                    help="lava backend: sim (Lava's CPU simulator), loihi2 (needs Intel's lava-loihi extension) or "
                         "auto (Loihi 2 when the extension is installed, else the simulator)")
    sa.add_argument("--fixed-point", action="store_true",
                    help="lava backend: Loihi 2 fixed point (8-bit weights, 24-bit states; Lava's fixed_pt models) "
                         "instead of floating point")
    sa.add_argument("--measure", action="store_true",
                    help="on a Loihi 2 chip: measure power, time and activity with loihi2_profiler (written beside "
                         "the counters as GRID.loihi2.json)")
    sa.add_argument("--quiet", action="store_true")
    sa.set_defaults(func=cmd_sample)

    ex = sub.add_parser("export", help="write a checkpoint's networks as NIR graphs (and ONNX, netx)")
    ex.add_argument("checkpoint", nargs="?", type=Path, help=ckpt_help)
    ex.add_argument("-o", "--output", type=Path, default=Path("denoiser.nir"),
                    help="NIR file to write; a sampler with a decoder writes STEM.denoiser.nir and STEM.decoder.nir")
    ex.add_argument("--netx-dir", type=Path, help="also write the fixed-point lava-dl netx HDF5 file of every "
                                                  "sequential chain of layers into this directory")
    ex.add_argument("--onnx", type=Path, help="also write each spiking network, unrolled over its T steps, as ONNX "
                                              "(STEM.<role>.onnx for a sampler with a decoder)")
    ex.add_argument("--onnx-twin", type=Path, help="also write their ANN twins (same layers, ReLU) as ONNX")
    ex.set_defaults(func=cmd_export)

    from .hardware_sim.profiles import builtin_names
    from .hardware_sim.report import DEFAULT_PROFILES

    re_ = sub.add_parser("report", help="energy, time and chip mapping per image on Loihi-class hardware",
                         formatter_class=_DefaultsHelp)
    re_.add_argument("checkpoint", nargs="?", type=Path,
                     help=ckpt_help + "; or a training run directory; or GRAPH.nir with --input; or a lava-dl netx "
                          "network NETWORK.net")
    re_.add_argument("-o", "--output", type=Path, help="report directory (default: RUN_DIR/report or ./report)")
    re_.add_argument("-n", "--num", type=_positive_int, default=16, help="images to generate and count")
    re_.add_argument("--steps", type=_positive_int, default=DEFAULT_INFERENCE_STEPS, help="DDIM denoising steps")
    re_.add_argument("--profile", action="append", metavar="NAME|FILE.toml",
                     help=f"hardware profile, repeatable (built in: {', '.join(builtin_names())}; "
                          f"default: {' '.join(DEFAULT_PROFILES)})")
    re_.add_argument("--set", action="append", metavar="PROFILE.QUANTITY=VALUE",
                     help="override one number of a profile, e.g. loihi2.static_power=0.3 (repeatable)")
    re_.add_argument("--device", default="cpu", help="where the bit-exact simulator runs: cpu, cuda or auto")
    re_.add_argument("--batch-size", type=_positive_int, help="images simulated at once (default 32 CPU, 1024 CUDA)")
    re_.add_argument("--seed", type=_seed, default=0)
    re_.add_argument("--no-float", action="store_true", help="skip the comparison with the float model")
    re_.add_argument("--unmask", choices=UNMASK_ORDERS,
                    help=unmask_help)
    re_.add_argument("--temperature", type=_positive_float, help="spiking-vq: softmax temperature of the token draws")
    re_.add_argument("--solver", choices=SOLVERS, help="DDIM samplers: ddim (default), dpm++ or unipc")
    re_.add_argument("--input", type=Path, help="GRAPH.nir: the inputs to play through it, an .npy array (T, ...) "
                                                "or (N, T, ...)")
    re_.add_argument("--input-bias", type=Path, help="NETWORK.net: a frame written into the input layer's bias, "
                                                     "(C, H, W) or lava-dl's (W, H, C) integers")
    re_.add_argument("--strict", action="store_true", help="GRAPH.nir: refuse values fixed point cannot represent "
                                                           "instead of rounding them")
    re_.add_argument("--dt", type=float, help="GRAPH.nir: its time step (default: its metadata's, else 1e-4)")
    re_.add_argument("--quiet", action="store_true")
    re_.set_defaults(func=cmd_report)

    ins = sub.add_parser("inspect", help="what a NIR graph or a checkpoint maps to on Lava and Loihi, without "
                                         "running anything", formatter_class=_DefaultsHelp)
    ins.add_argument("path", type=Path, help="GRAPH.nir, or a checkpoint (" + ", ".join(SHIPPED_MODELS) + ")")
    ins.add_argument("--fixed-point", action="store_true", help="also quantize: scales and rounding errors per layer")
    ins.add_argument("--strict", action="store_true", help="refuse values fixed point cannot represent")
    ins.add_argument("--dt", type=float, help="the graph's time step (default: its metadata's, else 1e-4)")
    ins.add_argument("--snn-steps", type=_positive_int, help="T, steps per evaluation (default: the metadata's)")
    ins.add_argument("--target", choices=["loihi2"], help="also say where each process would run on a chip")
    ins.set_defaults(func=cmd_inspect)

    rn = sub.add_parser("run", help="play inputs through a NIR graph on Lava or the simulator",
                        formatter_class=_DefaultsHelp)
    rn.add_argument("graph", type=Path, help="GRAPH.nir (from spikediff or any NIR exporter)")
    rn.add_argument("--input", type=Path, required=True,
                    help=".npy array: spikes or currents per step, (T, ...) for one inference or (N, T, ...)")
    rn.add_argument("--backend", default="lava", choices=["lava", "sim"],
                    help="lava: Lava's CPU simulator; sim: spikediff's simulator (bit-exact in fixed point)")
    rn.add_argument("--fixed-point", action="store_true", help="Loihi fixed point instead of floating point")
    rn.add_argument("--strict", action="store_true", help="refuse values fixed point cannot represent")
    rn.add_argument("--dt", type=float, help="the graph's time step (default: its metadata's, else 1e-4)")
    rn.add_argument("-o", "--output", type=Path, default=Path("run"), help="directory for outputs.npz and "
                                                                          "counters.json")
    rn.add_argument("--quiet", action="store_true")
    rn.set_defaults(func=cmd_run)

    from .metrics.evaluation import BACKENDS

    ev = sub.add_parser("eval", help="FID and KID of a checkpoint's samples (standard Inception features, offline)",
                        formatter_class=_DefaultsHelp)
    ev.add_argument("checkpoint", nargs="?", type=Path,
                    help=ckpt_help + "; or a training run directory")
    ev.add_argument("--data", choices=ALL_NAMES, help="reference dataset (default: the one the model was trained on)")
    ev.add_argument("-n", "--num", type=_positive_int, default=10000, help="samples to generate and score")
    ev.add_argument("--backend", default="sim", choices=list(BACKENDS),
                    help="torch: float model; sim: Loihi fixed point, bit-exact simulator (the deployed model); "
                         "lava: the fixed-point Lava run (slow)")
    ev.add_argument("--steps", type=_positive_int, default=DEFAULT_INFERENCE_STEPS, help="DDIM denoising steps")
    ev.add_argument("-o", "--output", type=Path, help="directory for samples and results (default: RUN_DIR/eval "
                                                      "or ./eval); reruns reuse the samples there")
    ev.add_argument("--ref-split", default="train", choices=["train", "test"])
    ev.add_argument("--ref-n", type=_positive_int, default=10000, help="reference images (the first N of the split)")
    ev.add_argument("--seed", type=_seed, default=0)
    ev.add_argument("--solver", choices=SOLVERS, help="DDIM samplers: ddim (default), dpm++ or unipc")
    ev.add_argument("--unmask", choices=UNMASK_ORDERS,
                    help=unmask_help)
    ev.add_argument("--temperature", type=_positive_float,
                    help=f"spiking-vq: softmax temperature of the token draws (default {DEFAULT_TEMPERATURE})")
    ev.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    ev.add_argument("--quiet", action="store_true")
    ev.set_defaults(func=cmd_eval)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status: 0, 2 for bad input (one line on stderr), 1 when the machine or a
    run fails the command (out of memory, a full disk, a Lava worker killed: one line too), 128 + the signal after
    Ctrl-C or SIGTERM."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help and --version (0), or a usage error, already printed
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    try:
        return args.func(args)
    except SpikediffError as exc:
        print(f"spikediff: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        status = _interrupt_status(exc)
        print(f"spikediff: {'interrupted' if status == 128 + signal.SIGINT else 'terminated'}", file=sys.stderr)
        return status
    except MemoryError:
        print("spikediff: error: out of memory", file=sys.stderr)
        return 1
    except RunFailure as exc:
        print(f"spikediff: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # the machine, not the input: a full disk, a file system gone read-only
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        print(f"spikediff: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
