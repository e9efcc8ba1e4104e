"""FSDDIM as published (spikediff's `fsddim` U-Net preset: 128 channels x 1 2 3 4, 2 blocks per level, T = 8,
32 x 32): its size, what its exact NIR form weighs, and what it costs on Loihi-class chips.

The exact deployable form of a nearest-up-sampling U-Net holds every decoder map in space-to-depth layout on the
4 x 4 bottleneck grid (spikediff/models/s2d.py); as dense kernels its derived convolutions hold 6.15 G entries at
the full width, more than this machine's memory. The compiler holds them compact (natural kernels in floating
point, merged taps in fixed point: the full width compiles to fixed point in seconds), and the core mapper
maps the full width in about an hour on one thread (``--direct 128``). Beside that direct figure, `spikediff
report` runs on the same architecture at reduced widths (every channel count divided alike, the time branch
too), each briefly trained on MNIST (padded to 32) so that batch norm and firing rates are those of real data,
and each category of energy, the time and the cores are fitted as a power of the width and extrapolated to 128.
Events scale with the DDIM steps: 1000-step figures are the 20-step ones times 50 (cores and chips do not
change).

It also runs one float Lava call of the `--lava-width` network (default: the paper's width) against PyTorch, spike for
spike, with its time: compiled in compact form, each derived kernel held and run as its natural one, which is what
lets the full width fit in memory.

Usage: python benchmarks/fsddim_paper.py --widths 8 12 --direct 32 128 --out benchmarks/results/fsddim_paper.md
(``--reuse-runs``: the priced widths from the last run's fsddim_paper/runs.json, only the rest again;
``--direct W ...``: widths also priced directly, untrained, beside the fit at that width)
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import resource
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from _report import write_report

from spikediff.checkpoint import load_model
from spikediff.hardware_sim.report import make_report
from spikediff.models.s2d import axis_taps
from spikediff.models.unet import SpikingUNet, preset
from spikediff.train import TrainConfig, train

PAPER_WIDTH = 128
# categories that follow the network's own counts (spikes x synapses, neuron updates, input), not the mapping
DYNAMIC = ("synaptic", "input synaptic", "input messages", "neuron", "input MAC")


def config(width: int):
    """The fsddim preset at ``width`` channels, its time branch scaled alike (64 at 128)."""
    return preset("fsddim", image_size=32, channels=width, time_channels=max(2, width // 2))


def split_form(model: SpikingUNet) -> dict:
    """The other exact form: every s2d map split into one population per phase, each synapse into one Conv2d per
    (output phase, input phase) pair with its own trimmed kernel. Entries and synapse layers, not built."""
    entries, layers = 0, 0
    for synapses in model.graph.values():
        for name, _src in synapses:
            layer = getattr(model, name)
            if layer.depthwise or layer.constant_source:
                entries += layer.c_out * (1 if layer.depthwise else layer.c_in) * layer.r_out ** 2
                layers += layer.r_out ** 2
                continue
            s, pad, _size, taps = axis_taps(layer.r_in, layer.r_out, layer.k, layer.stride, layer.upsample)
            offsets = defaultdict(set)
            for p, q, kk, _j in taps:
                offsets[p, q].add(kk - pad)
            kernel = {}
            for pq, ds in offsets.items():
                lo, hi = min(ds), max(ds)
                padding = max(-lo, hi + 1 - s, 0)
                kernel[pq] = max(hi + padding + 1, 2 * padding + 1)
            for ky in kernel.values():
                for kx in kernel.values():
                    entries += layer.c_out * layer.c_in * ky * kx
                    layers += 1
    return {"weight_entries": entries, "synapse_layers": layers}


def architecture(widths) -> list:
    rows = []
    for width in widths:
        model = SpikingUNet(config(width))
        s = model.sizes()
        rows.append({"width": width, **s, "macs_per_call": s["synapses"] * model.config.num_steps,
                     "derived_float64_GB": s["derived_weight_entries"] * 8 / 1e9, "split_form": split_form(model),
                     "populations": len(model.graph), "synapse_layers": sum(len(v) for v in model.graph.values())})
        del model
    return rows


def short_training(width: int, work: Path, steps: int, batch: int) -> Path:
    cfg = TrainConfig(data="mnist", steps=steps, batch_size=batch, warmup=max(1, steps // 5), checkpoint_every=steps,
                      log_every=max(1, steps // 5), model=config(width))
    start = time.perf_counter()
    path = train(cfg, work / f"c{width}", progress=False, log=lambda _m: None)
    print(f"width {width}: trained {steps} steps in {time.perf_counter() - start:.0f} s", flush=True)
    return path


def priced(width: int, checkpoint: Path, out: Path, n: int, steps: int) -> dict:
    model, schedule, _ = load_model(checkpoint)
    return price(model, schedule, width, f"fsddim preset at width {width}, {checkpoint}", out / f"report_c{width}", n,
                 steps, newer_than=checkpoint.stat().st_mtime)


def with_data_statistics(width: int):
    """(model, schedule): the preset at ``width`` with its weights as initialised and batch-norm statistics from 64
    MNIST training images (padded to 32) noised at random diffusion steps: firing rates of real inputs without a
    training run, which at the paper's width would take hours a step on one CPU thread."""
    from spikediff.data.datasets import load_images, to_model_range
    from spikediff.diffusion.schedule import NoiseSchedule
    from spikediff.train.trainer import pad_images

    torch.manual_seed(0)
    model, schedule = SpikingUNet(config(width)).train(), NoiseSchedule(1000, "v_prediction")
    images = pad_images(to_model_range(load_images("mnist", limit=64)[0]), 32)
    with torch.no_grad():
        for batch in images.split(16):
            t = torch.randint(0, schedule.num_train_timesteps, (len(batch),))
            model(schedule.add_noise(batch, torch.randn_like(batch), t), t)
    return model.eval(), schedule


def price(model, schedule, width: int, source: str, folder: Path, n: int, steps: int, newer_than: float = 0.0,
          **options) -> dict:
    """``spikediff report`` of ``model`` into ``folder`` (kept, and taken again if it is of the same source, images and
    steps, and newer than ``newer_than``), summarized."""
    cached = folder / "report.json"
    report = json.loads(cached.read_text()) if cached.exists() else None
    if report and report.get("source") == source and (report["images"], report["denoising_steps"]) == (n, steps) \
            and cached.stat().st_mtime > newer_than:
        seconds = report.get("report_seconds", float("nan"))  # a report of this very network: not made again
    else:
        start = time.perf_counter()
        report = make_report(model, schedule, folder, n=n, steps=steps, compare_float=False, progress=False,
                             source=source, **options)
        seconds = time.perf_counter() - start
        report["report_seconds"] = seconds
        cached.write_text(json.dumps({k: v for k, v in report.items() if k != "dir"}, indent=1) + "\n")
    pops = report["events_per_image"]["denoiser"]["populations"]
    rates = {k: v["firing_rate"] for k, v in pops.items() if v["firing_rate"] is not None}
    spikes = sum(v["spikes"] for v in pops.values())
    neurons = sum(v["neurons"] for k, v in pops.items() if k in rates)
    print(f"width {width}: report in {seconds:.0f} s", flush=True)
    return {"width": width, "report_s": seconds, "simulator_s": report["simulator"]["seconds"],
            "mean_rate": spikes / (neurons * model.config.num_steps * steps), "rates": rates,
            "cost": {c["profile"]: {"energy_J": c["energy_per_image_J"], "by_category_J": c["by_category_J"],
                                    "energy_range_J": c.get("range", {}).get("energy_per_image_J"),
                                    "single_image_J": (c.get("single_image") or {}).get("energy_J"),
                                    "time_s": (c.get("time") or {}).get("per_image_s"),
                                    "single_image_time_s": (c.get("single_image") or {}).get("time_s")}
                     for c in report["cost"]},
            "chips": report["chips"], "totals": report["events_per_image"]["denoiser"]["totals"]}


def fit(widths, values, at: float) -> tuple:
    """(value at ``at``, exponent) of a least-squares power law through (width, value)."""
    x, y = np.log(np.asarray(widths, float)), np.log(np.asarray(values, float))
    b, a = np.polyfit(x, y, 1)
    return float(math.exp(a + b * math.log(at))), float(b)


def extrapolate(runs: list, steps: int, at: int = PAPER_WIDTH) -> dict:
    """Each energy category, the time and the fewest cores fitted as a power of the width, at width ``at``."""
    widths = [r["width"] for r in runs]
    out = {}
    for prof in runs[0]["cost"]:
        cats = sorted(set().union(*(r["cost"][prof]["by_category_J"] for r in runs)))
        by_cat = {}
        for cat in cats:
            vals = [r["cost"][prof]["by_category_J"].get(cat, 0.0) for r in runs]
            if min(vals) > 0:
                by_cat[cat] = fit(widths, vals, at)
        energy = sum(v for v, _b in by_cat.values())
        dynamic = sum(v for k, (v, _b) in by_cat.items() if k in DYNAMIC)
        entry = {"energy_J": energy, "energy_1000_steps_J": energy * 1000 / steps, "dynamic_J": dynamic,
                 "dynamic_1000_steps_J": dynamic * 1000 / steps,
                 "by_category": {k: {"J": v, "exponent": b} for k, (v, b) in by_cat.items()}}
        if runs[0]["cost"][prof]["time_s"]:
            t, b = fit(widths, [r["cost"][prof]["time_s"] for r in runs], at)
            entry.update(time_s=t, time_1000_steps_s=t * 1000 / steps, time_exponent=b)
        last = runs[-1]["cost"][prof]
        if last.get("energy_range_J"):  # the bounds keep their ratio to the value at the largest width priced
            entry["energy_range_J"] = [energy * b / last["energy_J"] for b in last["energy_range_J"]]
        if last.get("single_image_J"):
            e1, b = fit(widths, [r["cost"][prof]["single_image_J"] for r in runs], at)
            t1, _ = fit(widths, [r["cost"][prof]["single_image_time_s"] for r in runs], at)
            entry.update(single_image_J=e1, single_image_exponent=b, single_image_time_s=t1)
        if prof in runs[0]["chips"]:
            from spikediff.hardware_sim.profiles import load_profile

            # the fewest cores a width needs is set by memory (neurons and shared kernels), a smooth function of the
            # width; the least-energy mapping spreads over a chip's cores and is not
            cores, b = fit(widths, [r["chips"][prof].get("fewest_cores", r["chips"][prof])["cores"] for r in runs],
                           at)
            per_chip = int(load_profile(prof).get("cores_per_chip"))
            entry.update(cores=round(cores), cores_exponent=b, chips=math.ceil(round(cores) / per_chip))
        out[prof] = entry
    return out


def lava_call(width: int) -> dict:
    """One float denoiser call on Lava's CPU simulator against PyTorch: time, processes, spike counts.

    Compiled in compact form (``to_nir(..., compact=True)``: each derived kernel held and run as its natural
    one), which is what lets the paper's width fit; the reference is the PyTorch model in float64, as Lava's
    float path computes."""
    from spikediff.export.deployment import compile_graph
    from spikediff.export.nir_graph import to_nir
    from spikediff.runtime.build import build
    from spikediff.runtime.run import run_windows

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = SpikingUNet(config(width)).eval()
    x, t = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(1)), torch.tensor([500])
    start = time.perf_counter()
    net = build(compile_graph(to_nir(model, compact=True), num_steps=model.config.num_steps))
    built = time.perf_counter()
    res = run_windows(net, model.make_input(x, t).numpy(), record_spikes=True)
    ran = time.perf_counter()
    stats = {}
    with torch.no_grad():
        model = model.double()
        expected = model.readout_current(x.double(), t, stats=stats)[0].numpy()
    lava = {k: int(res["spikes"][k].sum()) for k in stats}
    return {"width": width, "build_s": built - start, "run_s": ran - built, "lava_processes": len(net.processes),
            "lava_steps": int(net.window), "spikes_equal": all(lava[k] == int(v) for k, v in stats.items()),
            "populations_differing": sorted(k for k, v in stats.items() if lava[k] != int(v)),
            "max_readout_diff": float(np.abs(res["readout"][0].mean(0).reshape(-1) - expected).max()),
            "neurons": sum(model.neuron_counts().values()), "spikes": int(sum(stats.values())),
            "peak_rss_children_GB": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e6}


def _mj(j) -> str:
    if j is None:
        return "-"
    return f"{j:.3g} J" if j >= 1 else f"{j * 1e3:.3g} mJ"


def _ms(s) -> str:
    if s is None:
        return "-"
    return f"{s:.3g} s" if s >= 1 else f"{s * 1e3:.3g} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/fsddim_paper.md"))
    ap.add_argument("--work", type=Path, default=Path("/tmp/fsddim_paper"), help="training runs (not committed)")
    ap.add_argument("--widths", type=int, nargs="+", default=[8, 12, 16],
                    help="widths priced (the core mapper's search grows fast with the width)")
    ap.add_argument("--train-steps", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("-n", type=int, default=2, help="images per report")
    ap.add_argument("--steps", type=int, default=20, help="DDIM steps measured (1000 = these x 1000 / steps)")
    ap.add_argument("--lava-width", type=int, default=PAPER_WIDTH, help="width of the float Lava call (compact form)")
    ap.add_argument("--reuse-runs", action="store_true",
                    help="take the priced widths from the last run's fsddim_paper/runs.json instead of pricing again")
    ap.add_argument("--direct", type=int, nargs="*", default=[],
                    help="widths also priced directly on Loihi 2, untrained (weights as initialised, batch-norm "
                         "statistics from MNIST), compiled in compact form, beside the fit at that width")
    args = ap.parse_args()
    torch.set_num_threads(1)

    arch = architecture(sorted(set(args.widths) | {32, 64, PAPER_WIDTH}))
    runs = []
    saved = args.out.parent / "fsddim_paper" / "runs.json"
    if args.reuse_runs:
        runs = [r for r in json.loads(saved.read_text()) if r["width"] in args.widths]
        if sorted(r["width"] for r in runs) != sorted(args.widths):
            raise SystemExit(f"{saved} prices widths {[r['width'] for r in runs]}, not {args.widths}")
    for width in [] if args.reuse_runs else args.widths:
        ckpt = short_training(width, args.work, args.train_steps, args.batch_size)
        runs.append(priced(width, ckpt, args.out.parent / "fsddim_paper", args.n, args.steps))
    paper = extrapolate(runs, args.steps)
    direct = []
    for width in args.direct:
        model, schedule = with_data_statistics(width)
        run = price(model, schedule, width, f"fsddim preset at width {width}, weights as initialised, batch-norm "
                    f"statistics from 64 MNIST images", args.out.parent / "fsddim_paper" / f"direct_c{width}", args.n,
                    args.steps, profiles=("loihi2", "ac_mac_45nm"), bias_correction=False)
        direct.append({**run, "fit": extrapolate(runs, args.steps, at=width)})
        print(f"width {width}: priced directly in {run['report_s']:.0f} s", flush=True)
        del model
    # in a fresh process: Lava forks a worker per process (234 at the paper's width) from its parent, and this one
    # has grown by the mapper's search (8 GB at width 128; the forked copies filled this machine's 23 GB)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        lava = pool.submit(lava_call, args.lava_width).result()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    payload = {"architecture": arch, "runs": runs, "extrapolated_to_128": paper, "direct": direct, "lava_call": lava,
               "train_steps": args.train_steps, "batch_size": args.batch_size, "images": args.n,
               "ddim_steps": args.steps, "peak_rss_GB": peak}

    full = next(a for a in arch if a["width"] == PAPER_WIDTH)
    body = ["## The network", "",
            "| width | parameters | neurons | synapses (x positions) | MACs per call (T = 8) | derived dense weights "
            "| as float64 | phase-split form: weights, layers |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for a in arch:
        body.append(f"| {a['width']} | {a['parameters'] / 1e6:.3g} M | {a['neurons'] / 1e6:.3g} M | "
                    f"{a['synapses'] / 1e9:.3g} G | {a['macs_per_call'] / 1e9:.3g} G | "
                    f"{a['derived_weight_entries'] / 1e6:.4g} M | {a['derived_float64_GB']:.3g} GB | "
                    f"{a['split_form']['weight_entries'] / 1e6:.4g} M, {a['split_form']['synapse_layers']} |")
    body += ["", f"At width 128 (the paper's: 52.5 M parameters, 2.1 M neurons, about 40 G MACs per call) the preset "
             f"has {full['parameters'] / 1e6:.1f} M parameters, {full['neurons'] / 1e6:.2f} M neurons (spiking input, "
             f"down- and up-sampling layers and the per-grid time maps are extra; see spikediff/models/unet.py) and "
             f"{full['macs_per_call'] / 1e9:.1f} G MACs per call; {full['populations']} populations and "
             f"{full['synapse_layers']} synapse layers.", "",
             "## Priced with `spikediff report` (Loihi fixed point, bit-exact simulator)", "",
             f"Each width trained {args.train_steps} steps (batch {args.batch_size}, MNIST padded to 32), then "
             f"{args.n} images x {args.steps} DDIM steps.", "",
             "| width | profile | energy / image (pipelined) | one image alone | time / image | cores (fewest) | "
             "chips | mean firing rate | report time |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        for prof, c in r["cost"].items():
            m = r["chips"].get(prof)
            cores = f"{m['cores']} ({m.get('fewest_cores', m)['cores']})" if m else "-"
            body.append(f"| {r['width']} | {prof} | {_mj(c['energy_J'])} | {_mj(c.get('single_image_J'))} | "
                        f"{_ms(c['time_s'])} | {cores} | {m['chips'] if m else '-'} | {r['mean_rate']:.3f} | "
                        f"{r['report_s']:.0f} s |")
    body += ["", "## The paper's width (128), extrapolated", "",
             "| profile | energy / image, 20 steps [low, high] | 1000 steps | one image alone, 20 steps | "
             "time / image, 20 steps | 1000 steps | fewest cores | chips | exponents (energy categories; time; cores) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for prof, e in paper.items():
        exps = ", ".join(f"{k} {v['exponent']:.2f}" for k, v in e["by_category"].items())
        extra = f"; time {e['time_exponent']:.2f}" if "time_exponent" in e else ""
        extra += f"; cores {e['cores_exponent']:.2f}" if "cores_exponent" in e else ""
        rng = e.get("energy_range_J")
        rng = f" [{_mj(rng[0])}, {_mj(rng[1])}]" if rng else ""
        body.append(f"| {prof} | {_mj(e['energy_J'])}{rng} | {_mj(e['energy_1000_steps_J'])} | "
                    f"{_mj(e.get('single_image_J'))} | {_ms(e.get('time_s'))} | "
                    f"{_ms(e.get('time_1000_steps_s'))} | {e.get('cores', '-')} | {e.get('chips', '-')} | "
                    f"{exps}{extra} |")
    body += ["", "Dynamic energy alone (synaptic, input and neuron categories, which follow the network's own counts): "
             + "; ".join(f"{prof} {_mj(e['dynamic_J'])} per image at {args.steps} steps, "
                         f"{_mj(e['dynamic_1000_steps_J'])} at 1000" for prof, e in paper.items()) + ".", "",
             'Only these extrapolate credibly (exponents near 2 for synaptic ops, 1 for neurons). Cores, chips, '
             "static, routing, chip-to-chip energy and time are the mapping's, fitted through two narrow widths. "
             "The mapping stores only the kernel rows a core uses (a derived space-to-depth kernel's structural "
             "zeros do not fill Loihi 2 cores), and takes a space-to-depth map by the natural map's columns, so "
             "that its cores reach as few cores of the next map as the natural network's would (taken by its "
             'coarse columns, a core held every phase of every channel of a coarse position and reached most cores '
             'of the next map: width 12 then took 688 Loihi 2 cores at the fewest, and the fit carried to 128 gave '
             '702k). Most maps, natural and space-to-depth alike, are still bound by routing tables at both widths '
             "(see each report's per-layer table), so the cores' exponent fitted between the two widths, carried "
             "to 128, estimates that mapping's growth rather than measuring it. The full network compiles in compact "
             "form, to Loihi fixed point too (merged taps; see the README), and runs on the simulator"
             + ("; it is priced directly below." if PAPER_WIDTH in args.direct else
                "; pricing it directly takes the core mapper's search at the full width (`--direct 128`).")]
    if direct:
        body += ["", "## Priced directly, untrained", "",
                 f"`spikediff report` of the preset at each width of `--direct`, compiled in compact form (merged taps "
                 f"in fixed point, no dense derived kernel anywhere), with its weights as initialised and batch-norm "
                 f"statistics from 64 noised MNIST images (no training run: firing rates of real inputs, not what "
                 f"it draws), without the readout's bias correction, {args.n} images x {args.steps} DDIM steps, "
                 f"Loihi 2; beside it, the fit of the trained widths above at the same width.", "",
                 "| width | profile | energy / image | fit at this width | fewest cores | fit | chips | mean firing rate "
                 "| report time |", "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in direct:
            for prof, c in r["cost"].items():
                m, f = r["chips"].get(prof), r["fit"].get(prof, {})
                fewest = m.get("fewest_cores", m)["cores"] if m else None
                body.append(f"| {r['width']} | {prof} | {_mj(c['energy_J'])} | {_mj(f.get('energy_J'))} | "
                            f"{fewest if fewest else '-'} | {f.get('cores', '-')} | {m['chips'] if m else '-'} | "
                            f"{r['mean_rate']:.3f} | {r['report_s']:.0f} s |")
        body += ["", "The untrained network fires at about the trained narrow widths' mean rate (above), and how many "
                 "cores a width needs depends on its size, not its rates: where the fewest cores differ from the "
                 "fit, the fit is off (it carries the growth between two narrow widths, where routing tables bound "
                 "most maps, to widths where they do not)."]
    differing = ", ".join(lava["populations_differing"]) or "none"
    body += ["", "## One float Lava call", "",
             f"Width {lava['width']} (weights as initialised: this shows that it deploys, not what it draws), "
             f"compiled in compact form (each derived space-to-depth kernel held and run as its natural kernel; "
             f"dense, width 128's would be {full['derived_float64_GB']:.0f} GB in float64): "
             f"{lava['neurons']} neurons, {lava['lava_processes']} Lava processes, {lava['lava_steps']} Lava steps "
             f"per call; built in {lava['build_s']:.1f} s, ran in {lava['run_s']:.0f} s; {lava['spikes']} spikes; spike "
             f"counts equal to PyTorch (float64) in every population: {lava['spikes_equal']} (populations that differ: "
             f"{differing}); largest readout difference {lava['max_readout_diff']:.2g}. Largest Lava process: "
             f"{lava['peak_rss_children_GB']:.1f} GB.", "",
             "Lava's fixed-point path still holds dense derived kernels (its Conv process takes one dense kernel), "
             "so the full width runs on Lava in floating point only.", "",
             f"Peak memory of this benchmark: {peak:.1f} GB."]
    write_report(args.out, "FSDDIM as published: size, exact form and cost on Loihi-class chips", payload, body)
    (args.out.parent / "fsddim_paper" / "runs.json").write_text(json.dumps(runs, indent=1) + "\n")


if __name__ == "__main__":
    main()
