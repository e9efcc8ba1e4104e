"""The `spikediff` command line."""

from __future__ import annotations

import argparse
import math
import signal
import sys
from pathlib import Path

from . import SpikediffError, __version__


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


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


MODELS = ("fsddim", "spiking-vq", "latent-ddim")


def _check_training_size(args, builds, image_elements: int) -> None:
    """Refuse sizes that cannot fit before a trainer allocates them: each network's weights with their
    gradients, Adam's moments and the EMA (5 copies), and a batch's images (noise, inputs, targets)."""
    from .checkpoint import check_memory, check_model_size

    for build in builds:
        check_model_size(build, "the network these options declare (--channels, --hidden, ...)", copies=5)
    batch = args.batch_size or 0
    check_memory(batch * image_elements * 4 * 4, f"--batch-size {batch}")


def cmd_train(args) -> int:
    from .train.trainer import resolve_device

    _check_outputs([(args.out, "--out", True)], quiet=True)  # an existing run is resumed: the trainer says so
    resolve_device(args.device)
    if args.model != "latent-ddim":
        for option in ("resume_from", "init", "decay_steps"):
            if getattr(args, option) is not None:
                raise SpikediffError(f"--{option.replace('_', '-')} is a latent-ddim option for now")
    if args.model == "latent-ddim":
        return _train_latent(args)
    if args.model == "spiking-vq":
        if args.lateral or args.selection:
            raise SpikediffError("--lateral and --selection extend the fsddim denoiser; drop them or use --model "
                                 "fsddim")
        return _train_spiking_vq(args)
    from .models import DenoiserConfig
    from .train import TrainConfig, train

    d = DenoiserConfig()
    model = DenoiserConfig(channels=args.channels or d.channels, hidden=args.hidden or d.hidden,
                           num_steps=args.snn_steps, time_features=args.time_features or d.time_features, beta=args.beta,
                           threshold=args.threshold, readout_alpha=args.readout_alpha, lateral=args.lateral,
                           selection=args.selection, groups=args.groups, local_weight=args.local_weight,
                           lateral_decay=args.lateral_decay)
    cfg = TrainConfig(**_train_options(args, TrainConfig), prediction_type=args.prediction, model=model)
    from dataclasses import replace

    from .data.datasets import image_size
    from .models import SpikingDenoiser

    size = image_size(args.data)
    _check_training_size(args, [lambda: SpikingDenoiser(replace(model, image_size=size))], size * size)
    return _run_training(train, cfg, args, "")


def _train_options(args, config_class) -> dict:
    """The training options both model kinds share, from the command line (a config class's defaults
    where an option is not given)."""
    return dict(data=args.data, steps=args.steps or config_class.steps,
                batch_size=args.batch_size or config_class.batch_size, lr=args.lr, warmup=args.warmup,
                ema_decay=args.ema_decay, seed=args.seed, data_limit=args.data_limit,
                checkpoint_every=args.checkpoint_every, device=args.device)


def _interrupt_status(exc: KeyboardInterrupt) -> int:
    """128 + the signal that stopped the run (``KeyboardInterrupt(signum)``; a plain one is Ctrl-C)."""
    signum = exc.args[0] if exc.args and isinstance(exc.args[0], int) else int(signal.SIGINT)
    return 128 + signum


def _run_training(train_fn, cfg, args, where: str) -> int:
    try:
        path = train_fn(cfg, args.out, progress=not args.quiet)
    except KeyboardInterrupt as exc:
        return _interrupt_status(exc)
    print(f"checkpoint: {path}{where}")
    return 0


def _check_latent_inputs(args) -> None:
    """The checkpoints a latent-ddim run reads, loaded and checked now: the run reaches --resume-from and
    --init only after encoding the training set with the autoencoder, minutes in."""
    from .checkpoint import load_model, load_raw, resolve
    from .models import SpikingVQDiffusion

    autoencoder = args.autoencoder or f"{args.data}-vq"
    if not isinstance(load_model(resolve(autoencoder))[0], SpikingVQDiffusion):
        raise SpikediffError(f"--autoencoder {autoencoder}: not a spiking-vq checkpoint (its VQ-SVAE is the "
                             f"autoencoder)")
    if args.init is not None and load_model(resolve(args.init))[2].get("kind") != "latent-ddim":
        raise SpikediffError(f"--init {args.init}: not a latent-ddim checkpoint")
    if args.resume_from is not None:
        ckpt = load_raw(args.resume_from)
        if "ema_half" not in ckpt:
            raise SpikediffError(f"--resume-from {args.resume_from}: not a compact resume file (a run's resume.pt)")
        if ckpt.get("kind") != "latent-ddim":
            raise SpikediffError(f"--resume-from {args.resume_from}: the resume.pt of a {ckpt.get('kind') or 'fsddim'} "
                                 f"run, not of a latent-ddim run")
        load_model(args.resume_from)


def _train_latent(args) -> int:
    from .models.latent_denoiser import LatentDenoiserConfig
    from .train.latent_trainer import LatentTrainConfig, train_latent_ddim

    _check_latent_inputs(args)

    d = LatentDenoiserConfig()
    model = LatentDenoiserConfig(channels=args.channels or d.channels, hidden=args.hidden or d.hidden,
                                 blocks=args.blocks, num_steps=args.snn_steps,
                                 time_features=args.time_features or d.time_features, beta=args.beta,
                                 threshold=args.threshold, readout_alpha=args.readout_alpha)
    cfg = LatentTrainConfig(**_train_options(args, LatentTrainConfig), prediction_type=args.prediction,
                            autoencoder=args.autoencoder or f"{args.data}-vq", lr_min=args.lr_min,
                            decay_steps=args.decay_steps, snap=args.snap, model=model)
    from .models.latent_denoiser import SpikingLatentDenoiser

    _check_training_size(args, [lambda: SpikingLatentDenoiser(model)], model.latent_channels * model.grid ** 2)
    try:
        path = train_latent_ddim(cfg, args.out, progress=not args.quiet, resume_from=args.resume_from,
                                 init=args.init)
    except KeyboardInterrupt as exc:
        return _interrupt_status(exc)
    print(f"checkpoint: {path}")
    return 0


def _train_spiking_vq(args) -> int:
    from .models import TokenDenoiserConfig, VQConfig
    from .train.vq_trainer import VQTrainConfig, train_spiking_vq

    v, d = VQConfig(), TokenDenoiserConfig()
    neuron = dict(num_steps=args.snn_steps, beta=args.beta, threshold=args.threshold, readout_alpha=args.readout_alpha)
    vq = VQConfig(channels=args.channels or v.channels, codebook_size=args.codebook_size, code_dim=args.code_dim, **neuron)
    sdid = TokenDenoiserConfig(channels=args.sdid_channels, hidden=args.hidden or d.hidden,
                               time_features=args.time_features or d.time_features, **neuron)
    cfg = VQTrainConfig(**_train_options(args, VQTrainConfig), vq_steps=args.vq_steps,
                        mask_schedule=args.mask_schedule, vq=vq, sdid=sdid)
    from dataclasses import replace

    from .data.datasets import image_size
    from .models import SpikingTokenDenoiser, SpikingVQVAE

    vq_sized = replace(vq, image_size=image_size(args.data))
    _check_training_size(args, [lambda: SpikingVQVAE(vq_sized), lambda: SpikingTokenDenoiser(
        replace(sdid, codebook_size=vq.codebook_size, grid=vq_sized.grid))], vq_sized.image_size ** 2)
    return _run_training(train_spiking_vq, cfg, args,
                         f" (VQ-SVAE and SDID; the stages' runs are in {args.out}/vq and {args.out}/sdid)")


def _print_spike_table(neurons: dict, spikes_per_image: dict, updates_per_neuron: int, footer: str) -> None:
    print(f"{'layer':8s} {'neurons':>8s} {'spikes/image':>13s} {'rate':>6s}")
    for name, count in neurons.items():
        print(f"{name:8s} {count:8d} {spikes_per_image[name]:13.0f} {spikes_per_image[name] / (count * updates_per_neuron):6.3f}")
    print(f"{'total':8s} {sum(neurons.values()):8d} {sum(spikes_per_image.values()):13.0f}   {footer}")


def cmd_sample(args) -> int:
    from .checkpoint import load_model
    from .images import check_png_path, save_grid

    args.output = check_png_path(args.output)
    if args.fixed_point and args.backend != "lava":
        raise SpikediffError("--fixed-point needs --backend lava (the torch backend is the float model)")
    counters = args.output.with_suffix(".counters.json") if args.backend == "lava" else None
    _check_outputs([(args.output, "output", False), (counters, "output", False)], args.quiet)
    model, schedule, _ = load_model(args.checkpoint)
    _check_images_memory(args.num, model.image_shape, f"-n {args.num}")
    if schedule is None:
        return _sample_spiking_vq(args, model)
    if args.temperature is not None:
        raise SpikediffError("--temperature applies to spiking-vq checkpoints (token sampling), not to DDIM")
    if args.backend == "lava":
        return _sample_lava(args, model, schedule)
    from .diffusion import sample_torch
    from .train.trainer import resolve_device

    device = resolve_device(args.device)
    stats: dict = {}
    images = sample_torch(model, schedule, args.num, num_inference_steps=args.steps, seed=args.seed,
                          batch_size=args.batch_size, device=device, progress=not args.quiet, stats=stats)
    out = save_grid(images, args.output)
    print(f"wrote {len(images)} samples to {out}")
    if not args.quiet:
        _print_spike_table(model.neuron_counts(), {k: v / args.num for k, v in stats.items()},
                           args.steps * model.config.num_steps, f"({args.steps} DDIM steps x T={model.config.num_steps})")
    return 0


def _sample_spiking_vq(args, model) -> int:
    from .images import save_grid
    from .train.trainer import resolve_device

    if args.backend == "lava":
        return _sample_spiking_vq_lava(args, model)
    stats: dict = {}
    images = model.sample(args.num, args.steps, seed=args.seed, temperature=args.temperature,
                          batch_size=args.batch_size, device=resolve_device(args.device), progress=not args.quiet,
                          stats=stats)
    out = save_grid(images, args.output)
    print(f"wrote {len(images)} samples to {out}")
    if not args.quiet:
        sdid, dec = model.sdid, model.vq.decoder
        for net, updates, what in ((sdid, args.steps * sdid.config.num_steps,
                                    f"SDID: {args.steps} unmasking steps x T={sdid.config.num_steps}"),
                                   (dec, dec.config.num_steps, f"decoder: one pass x T={dec.config.num_steps}")):
            counts = net.neuron_counts()
            _print_spike_table(counts, {k: stats[k] / args.num for k in counts}, updates, f"({what})")
    return 0


def _say_where_lava_runs(args) -> None:
    from .runtime.session import loihi2_available

    if args.lava_target == "auto" and not loihi2_available() and not args.quiet:
        print("Intel's Lava extension for Loihi is not installed: running on Lava's CPU simulator (Loihi2SimCfg)")


def _sample_spiking_vq_lava(args, model) -> int:
    import torch

    from .atomic import write_json_atomic
    from .export.nir_graph import vq_graphs
    from .images import save_grid
    from .runtime.counters import counters_report
    from .runtime.vq_sampler import sample_vq_lava

    _say_where_lava_runs(args)
    graphs = vq_graphs(model)
    result = sample_vq_lava(graphs, args.num, args.steps, seed=args.seed, temperature=args.temperature,
                            target=args.lava_target, fixed_point=args.fixed_point, progress=not args.quiet)
    out = save_grid(torch.from_numpy(result["images"]), args.output)
    report = counters_report(result)
    dnet = result["decoder_network"]
    report["decoder"] = {name: {"neurons": int(dnet.populations[name][1]),
                                "spikes_per_image": float(c.mean())} for name, c in result["decoder_counters"].items()}
    if args.fixed_point:
        from .hardware_sim.vq_fixed_sampler import same_as_lava, sample_vq_fixed

        sim = sample_vq_fixed(graphs, args.num, args.steps, seed=args.seed, temperature=args.temperature,
                              fixed=result["fixed_point"])
        report["bit_exact_vs_simulator"] = exact = same_as_lava(sim, result)
    counters_path = write_json_atomic(report, out.with_suffix(".counters.json"))
    print(f"wrote {args.num} samples to {out} and counters to {counters_path}")
    if not args.quiet:
        pops = report["populations"]
        _print_spike_table({k: v["neurons"] for k, v in pops.items()},
                           {k: v["spikes_in_active_steps_per_image"] for k, v in pops.items()},
                           args.steps * result["network"].num_steps,
                           f"(SDID on Lava: {args.steps} unmasking steps x T={result['network'].num_steps})")
        _print_spike_table({k: v["neurons"] for k, v in report["decoder"].items()},
                           {k: v["spikes_per_image"] for k, v in report["decoder"].items()}, dnet.num_steps,
                           f"(decoder on Lava: one pass x T={dnet.num_steps})")
    if args.fixed_point:
        print("fixed point: tokens, images and spike counts " + ("identical to spikediff's bit-exact simulator"
              if exact else "DIFFER from spikediff's bit-exact simulator (please report this)"))
        if not exact:
            return 1
    return 0


def _sample_lava(args, model, schedule) -> int:
    import torch

    from .atomic import write_json_atomic
    from .diffusion.sampler import initial_noise
    from .export.nir_graph import to_nir
    from .images import save_grid
    from .runtime.counters import counters_report
    from .runtime.lava_sampler import sample_lava

    cfg = model.config
    noise = initial_noise(args.num, (cfg.in_channels, cfg.image_size, cfg.image_size), args.seed).numpy()
    _say_where_lava_runs(args)
    graph = to_nir(model, schedule)
    result = sample_lava(graph, noise, args.steps, progress=not args.quiet, target=args.lava_target,
                         fixed_point=args.fixed_point)
    out = save_grid(torch.from_numpy(result["images"]), args.output)
    report = counters_report(result)
    if args.fixed_point:  # a deployment is only as good as its exactness: check it against the simulator
        from .hardware_sim.fixed_sampler import same_as_lava, sample_fixed

        exact = same_as_lava(sample_fixed(graph, noise, args.steps, fixed=result["network"].fixed_point), result)
        report["bit_exact_vs_simulator"] = exact
    counters_path = write_json_atomic(report, out.with_suffix(".counters.json"))
    print(f"wrote {args.num} samples to {out} and counters to {counters_path}")
    if not args.quiet:
        pops = report["populations"]
        _print_spike_table({k: v["neurons"] for k, v in pops.items()}, {k: v["spikes_in_active_steps_per_image"] for k, v in pops.items()},
                           args.steps * cfg.num_steps,
                           f"({args.steps} DDIM steps x T={cfg.num_steps}; Lava: {report['images_in_flight']} images in "
                           f"flight, one evaluation every {report['period']} steps, {report['lava_steps']} steps in all)")
    if args.fixed_point:
        print("fixed point: images and spike counts " + ("identical to spikediff's bit-exact simulator" if exact else
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
    from .export.nir_graph import to_nir, write_nir

    model, schedule, _ = load_model(args.checkpoint)
    if schedule is None:
        return _export_spiking_vq(args, model)
    out = write_nir(to_nir(model, schedule), args.output)
    print(f"wrote {out}")
    if args.onnx is not None or args.onnx_twin is not None:
        from .export.onnx_export import export_onnx

        for path, twin in ((args.onnx, False), (args.onnx_twin, True)):
            if path is not None:
                what = "ANN twin (ReLU, one pass)" if twin else f"spiking denoiser unrolled over T={model.config.num_steps}"
                print(f"wrote {export_onnx(model, path, twin=twin)} (ONNX, {what}; onnx.checker passed)")
    if args.netx_dir is not None:
        import nir

        from .export.netx_hdf5 import export_chains

        for path in export_chains(nir.read(out), args.netx_dir):
            print(f"wrote {path} (lava-dl netx, Loihi fixed point)")
    return 0


def _export_spiking_vq(args, model) -> int:
    from .export.nir_graph import vq_graphs, write_nir

    if args.onnx or args.onnx_twin or args.netx_dir:
        raise SpikediffError("--onnx, --onnx-twin and --netx-dir: not available for spiking-vq checkpoints yet "
                             "(sample, eval, report and export to NIR are)")
    if args.output.suffix != ".nir":
        raise SpikediffError(f"output {args.output}: NIR files end in .nir")
    for name, graph in vq_graphs(model).items():
        path = write_nir(graph, args.output.with_suffix(f".{name}.nir"))
        print(f"wrote {path} ({'SDID denoiser' if name == 'sdid' else 'token decoder, codebook folded in'})")
    return 0


def _checkpoint_and_output(args, folder: str):
    """CKPT may be a training run directory: then its EMA checkpoint, with the output inside it by default."""
    from .checkpoint import resolve

    ckpt, out = resolve(args.checkpoint), args.output
    if ckpt.is_dir():
        return ckpt / "model.pt", out or ckpt / folder
    return ckpt, out


def cmd_report(args) -> int:
    from .checkpoint import load_model
    from .hardware_sim.profiles import parse_overrides
    from .hardware_sim.report import make_report

    ckpt, out = _checkpoint_and_output(args, "report")
    parse_overrides(args.set)  # a bad --set fails before any work
    _check_outputs([(out or Path("report"), "report folder", True)], args.quiet)
    model, schedule, _ = load_model(ckpt)
    _check_images_memory(args.num, model.image_shape, f"-n {args.num}")
    if schedule is None:
        from .hardware_sim.vq_report import make_vq_report as make
    else:
        from functools import partial

        make = partial(make_report, schedule=schedule)
    result = make(model, out_dir=out or Path("report"), n=args.num, steps=args.steps,
                  profiles=args.profile or None, overrides=parse_overrides(args.set), device=args.device,
                  seed=args.seed, batch_size=args.batch_size, compare_float=not args.no_float,
                  progress=not args.quiet, source=str(ckpt))
    chips = result.get("chips", result["mapping"])  # spiking-vq: both networks on the chip together
    if not args.quiet:
        print(f"{'profile':12s} {'energy/image':>13s} {'time/image':>11s} {'cores':>6s} {'chips':>5s}")
        for c in result["cost"]:
            m = chips.get(c["profile"])
            t = c.get("time", {}).get("per_image_s")
            print(f"{c['profile']:12s} {c['energy_per_image_J'] * 1e3:10.4g} mJ "
                  f"{(f'{t * 1e3:8.3g} ms') if t else '-':>11s} {m['cores'] if m else '-':>6} {m['chips'] if m else '-':>5}")
    print(f"wrote {result['dir']}/report.md, report.json and figures")
    return 0


def cmd_eval(args) -> int:
    from .checkpoint import load_model
    from .metrics.evaluation import evaluate

    ckpt, out = _checkpoint_and_output(args, "eval")
    _check_outputs([(out or Path("eval"), "eval folder", True)], args.quiet)
    model, schedule, raw = load_model(ckpt)
    _check_images_memory(args.num, model.image_shape, f"-n {args.num}")
    data = args.data or raw.get("train", {}).get("data") or "mnist"
    from .data.datasets import ALL_NAMES

    if data not in ALL_NAMES:
        raise SpikediffError(f"checkpoint {ckpt}: trained on {data!r}, not a dataset spikediff knows; pass --data")
    if schedule is not None and args.temperature is not None:
        raise SpikediffError("--temperature applies to spiking-vq checkpoints (token sampling), not to DDIM")
    r = evaluate(model, schedule, out or Path("eval"), data, args.num, args.steps, args.backend, seed=args.seed,
                 temperature=args.temperature,
                 ref_split=args.ref_split, ref_n=args.ref_n, device=args.device, progress=not args.quiet,
                 source=str(ckpt))
    print(f"FID {r['fid']:.2f}  KID {r['kid'] * 1e3:.2f} +- {r['kid_std'] * 1e3:.2f} (x1e-3)  "
          f"{r['n']} samples ({args.backend}, {args.steps} {'DDIM' if schedule is not None else 'unmasking'} steps"
          f"{'' if schedule is not None else ', temperature ' + format(r['temperature'], 'g')}) against {r['reference']}")
    print(f"wrote {r['json']}")
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
    from .data.datasets import ALL_NAMES, DATASETS
    from .checkpoint import SHIPPED_MODELS
    from .diffusion.absorbing import DEFAULT_TEMPERATURE
    from .diffusion.sampler import DEFAULT_INFERENCE_STEPS
    from .diffusion.schedule import PREDICTION_TYPES
    from .runtime.session import TARGETS
    from .models import DenoiserConfig
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
    from .train.vq_trainer import VQTrainConfig

    t, m, v, d, vt = TrainConfig(), DenoiserConfig(), VQConfig(), TokenDenoiserConfig(), VQTrainConfig()
    tr = sub.add_parser("train", help="train a spiking diffusion model (resumes if OUT holds a run)",
                        formatter_class=_DefaultsHelp)
    tr.add_argument("--model", default="fsddim", choices=MODELS,
                    help="fsddim: FSDDIM-style spiking DDPM denoiser; spiking-vq: Spiking-Diffusion (VQ-SVAE, then "
                         "absorbing diffusion over its tokens with the SDID denoiser)")
    tr.add_argument("--data", default=t.data, choices=ALL_NAMES)
    tr.add_argument("--out", type=Path, required=True, help="run directory (last.pt, model.pt, log.jsonl)")
    tr.add_argument("--steps", type=_positive_int, help=f"optimizer steps in total (spiking-vq: of the SDID stage) "
                                                        f"[default: {t.steps}; spiking-vq {vt.steps}]")
    tr.add_argument("--batch-size", type=_positive_int, help=f"[default: {t.batch_size}; spiking-vq {vt.batch_size}]")
    tr.add_argument("--lr", type=_interval(0, 1, False, False), default=t.lr)
    tr.add_argument("--warmup", type=_non_negative_int, default=t.warmup)
    tr.add_argument("--ema-decay", type=_interval(0, 1, True, False), default=t.ema_decay)
    tr.add_argument("--prediction", default=t.prediction_type, choices=PREDICTION_TYPES,
                    help="fsddim training target (why v: see spikediff/train/trainer.py)")
    tr.add_argument("--channels", type=_positive_int,
                    help=f"fsddim: full-resolution width C (the strided and decoder layers have 2C) [default: "
                         f"{m.channels}]; spiking-vq: the VQ-SVAE's C (latent-grid layers 2C) [default: {v.channels}]")
    tr.add_argument("--hidden", type=_positive_int, help=f"neurons of the dense (global) layer [default: {m.hidden}; "
                                                         f"spiking-vq SDID {d.hidden}]")
    tr.add_argument("--snn-steps", type=_positive_int, default=m.num_steps, help="T, SNN steps per denoiser call")
    tr.add_argument("--time-features", type=_positive_int, help=f"[default: {m.time_features}; latent-ddim 16]")
    tr.add_argument("--beta", type=_decay("beta"), default=m.beta,
                    help="membrane decay (1 - Lava dv), multiple of 1/4096")
    tr.add_argument("--threshold", type=_positive_float, default=m.threshold)
    tr.add_argument("--readout-alpha", type=_decay("readout_alpha"), default=m.readout_alpha,
                    help="readout current decay (1 - Lava du)")
    vqo = tr.add_argument_group("spiking-vq options")
    vqo.add_argument("--vq-steps", type=_positive_int, default=vt.vq_steps, help="optimizer steps of the VQ-SVAE stage")
    vqo.add_argument("--codebook-size", type=_positive_int, default=v.codebook_size, help="K, codes in the codebook")
    vqo.add_argument("--code-dim", type=_positive_int, default=v.code_dim, help="D, dimensions of a code vector")
    vqo.add_argument("--sdid-channels", type=_positive_int, default=d.channels, help="width of the SDID's grid layers")
    vqo.add_argument("--mask-schedule", default=vt.mask_schedule, choices=MASK_SCHEDULES,
                     help="masked fraction over the sampling steps (training draws from the same)")
    ld = tr.add_argument_group("latent-ddim options")
    ld.add_argument("--autoencoder", help="spiking-vq checkpoint whose VQ-SVAE encodes and decodes the latents "
                                          "[default: DATA-vq, the shipped one]")
    ld.add_argument("--blocks", type=_positive_int, default=2, help="residual blocks of the latent denoiser")
    ld.add_argument("--snap", action="store_true", help="decode the nearest code vectors of a sampled latent")
    ld.add_argument("--decay-steps", type=_positive_int, help="cosine learning-rate decay to --lr-min at this step")
    ld.add_argument("--lr-min", type=_interval(0, 1, True, False), default=1e-4)
    ld.add_argument("--resume-from", type=Path, help="a run's compact resume.pt: continue it in an empty --out")
    ld.add_argument("--init", help="start from the weights of this latent-ddim checkpoint")
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
    sa.add_argument("checkpoint", nargs="?", type=Path, help=ckpt_help)
    sa.add_argument("--backend", default="torch", choices=["torch", "lava"],
                    help="torch: PyTorch; lava: the NIR export run on Lava (see --lava-target, --fixed-point)")
    sa.add_argument("-n", "--num", type=_positive_int, default=64, help="number of images")
    sa.add_argument("-o", "--output", type=Path, default=Path("samples.png"),
                    help="PNG grid to write, or a directory (samples.png and its counters go there)")
    sa.add_argument("--steps", type=_positive_int, default=DEFAULT_INFERENCE_STEPS,
                    help="DDIM denoising steps (spiking-vq: unmasking steps, at most the number of tokens)")
    sa.add_argument("--temperature", type=_positive_float,
                    help=f"spiking-vq: softmax temperature of the token draws (default {DEFAULT_TEMPERATURE})")
    sa.add_argument("--seed", type=_seed, default=0)
    sa.add_argument("--batch-size", type=_positive_int, default=64)
    sa.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (torch backend)")
    sa.add_argument("--lava-target", default="auto", choices=list(TARGETS),
                    help="lava backend: sim (Lava's CPU simulator), loihi2 (needs Intel's lava-loihi extension) or "
                         "auto (Loihi 2 when the extension is installed, else the simulator)")
    sa.add_argument("--fixed-point", action="store_true",
                    help="lava backend: Loihi 2 fixed point (8-bit weights, 24-bit states; Lava's fixed_pt models) "
                         "instead of floating point")
    sa.add_argument("--quiet", action="store_true")
    sa.set_defaults(func=cmd_sample)

    ex = sub.add_parser("export", help="write a checkpoint's denoiser as a NIR graph")
    ex.add_argument("checkpoint", nargs="?", type=Path, help=ckpt_help)
    ex.add_argument("-o", "--output", type=Path, default=Path("denoiser.nir"), help="NIR file to write")
    ex.add_argument("--netx-dir", type=Path, help="also write the fixed-point lava-dl netx HDF5 file of every "
                                                  "sequential chain of layers into this directory")
    ex.add_argument("--onnx", type=Path, help="also write the spiking denoiser, unrolled over its T steps, as ONNX")
    ex.add_argument("--onnx-twin", type=Path, help="also write its ANN twin (same layers, ReLU) as ONNX")
    ex.set_defaults(func=cmd_export)

    from .hardware_sim.profiles import builtin_names
    from .hardware_sim.report import DEFAULT_PROFILES

    re_ = sub.add_parser("report", help="energy, time and chip mapping per image on Loihi-class hardware",
                         formatter_class=_DefaultsHelp)
    re_.add_argument("checkpoint", nargs="?", type=Path,
                     help=ckpt_help + "; or a training run directory")
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
    re_.add_argument("--quiet", action="store_true")
    re_.set_defaults(func=cmd_report)

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
    ev.add_argument("--temperature", type=_positive_float,
                    help=f"spiking-vq: softmax temperature of the token draws (default {DEFAULT_TEMPERATURE})")
    ev.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    ev.add_argument("--quiet", action="store_true")
    ev.set_defaults(func=cmd_eval)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status: 0, 2 for bad input (one line on stderr), 1 when the machine
    fails the command (out of memory, a full disk: one line too), 128 + the signal after Ctrl-C or SIGTERM."""
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
    except OSError as exc:  # the machine, not the input: a full disk, a file system gone read-only
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        print(f"spikediff: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
