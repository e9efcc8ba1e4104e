"""Energy and time per image on each hardware profile, cores and chips used, fixed point against float,
and the bit-exact simulator's throughput against Lava's CPU simulator, for a shipped pixel denoiser
(mnist-patch unless --model).

Usage: python benchmarks/hardware_cost.py --out benchmarks/results/hardware_cost.md
It also writes the full `spikediff report` (markdown, JSON, figures) of the run into
benchmarks/results/hardware_report/.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _report import add_pixel_model_option, write_report

from spikediff.checkpoint import load_model
from spikediff.diffusion.sampler import initial_noise
from spikediff.export.deployment import compile_sampler
from spikediff.export.nir_graph import sampler_graphs
from spikediff.hardware_sim.report import make_report
from spikediff.hardware_sim.sampler import same_as_lava, sample_sim
from spikediff.runtime.run import sample_lava


def _mj(joules) -> str:
    return "-" if joules is None else f"{joules * 1e3:.3g} mJ"


def _ms(seconds) -> str:
    return f"{seconds * 1e3:.3g} ms"


def _rng(value, bounds, fmt) -> str:
    return f"{fmt(value)} [{fmt(bounds[0])}, {fmt(bounds[1])}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/hardware_cost.md"))
    add_pixel_model_option(ap)
    ap.add_argument("--n-lava", type=int, default=3, help="images run on Lava (fixed point, pipelined)")
    ap.add_argument("-n", type=int, default=256, help="images for the report and the simulator's throughput")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    model, schedule, _ = load_model(args.model)
    cfg = model.config
    sd = compile_sampler(sampler_graphs(model, schedule), fixed_point=True)
    noise = initial_noise(args.n_lava, (cfg.in_channels, cfg.image_size, cfg.image_size), 0).numpy()
    start = time.perf_counter()
    lava = sample_lava(sd, args.n_lava, args.steps, noise=noise, progress=True, target="sim")
    lava_s = time.perf_counter() - start
    exact = same_as_lava(sample_sim(sd, args.n_lava, args.steps, noise=noise, device=args.device), lava)

    report = make_report(model, schedule, args.out.parent / "hardware_report", n=args.n, steps=args.steps,
                         device=args.device, source=args.model)
    sim_rate = report["simulator"]["images_per_s"]
    lava_rate = args.n_lava / lava_s
    payload = {"images_lava": args.n_lava, "images_sim": args.n, "ddim_steps": args.steps,
               "lava_fixed_s_per_image": lava_s / args.n_lava, "sim_images_per_s": sim_rate,
               "sim_device": args.device, "speedup": sim_rate / lava_rate, "bit_exact": exact,
               "fixed_vs_float": report["fixed_vs_float"], "mapping": report["mapping"]["denoiser"],
               "headline": report["headline"], "cost": report["cost"]}
    body = [f"Shipped checkpoint, Loihi fixed point, {args.steps} DDIM steps, T = {cfg.num_steps}. Energy and events "
            f"from the bit-exact simulator over {args.n} images; full report: "
            f"[hardware_report/report.md](hardware_report/report.md). Every figure is value [low, high]: the "
            f"profile's numbers at their values, and all at their low or all at their high bounds. Two mappings per "
            f"chip: the least energy (cores given to layers by their work, up to full chips) and the fewest cores. "
            f"Pipelined: {args.n} images in flight; alone: one image through an idle chip.", "",
            "| profile | mapping | cores | chips | energy / image (pipelined) | time / image (pipelined) | "
            "energy, one image alone | latency, one image alone |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    twin = ""
    for c in report["cost"]:
        m, t = report["chips"].get(c["profile"]), c.get("time")
        if t is None:
            body.append(f"| {c['profile']} | - | - | - | **{_mj(c['energy_per_image_J'])}** | - | - | - |")
        else:
            s = c["single_image"]
            body.append(f"| {c['profile']} | least energy | {m['cores']} | {m['chips']} | "
                        f"**{_rng(c['energy_per_image_J'], c['range']['energy_per_image_J'], _mj)}** | "
                        f"{_rng(t['per_image_s'], c['range']['time_per_image_s'], _ms)} | "
                        f"{_rng(s['energy_J'], s['energy_range_J'], _mj)} | "
                        f"{_rng(s['time_s'], s['time_range_s'], _ms)} |")
            f = c["fewest_cores"]
            body.append(f"| {c['profile']} | fewest cores | {f['cores']} | {m['fewest_cores']['chips']} | "
                        f"{_rng(f['energy_per_image_J'], f['energy_range_J'], _mj)} | "
                        f"{_rng(f['time_per_image_s'], f['time_range_s'], _ms)} | "
                        f"{_rng(f['single_image_J'], f['single_image_range_J'], _mj)} | "
                        f"{_rng(f['single_image_time_s'], f['single_image_time_range_s'], _ms)} |")
        if "ann_twin" in c:
            a = c["ann_twin"]
            twin = (f"ANN twin (same layers, ReLU, dense, once per DDIM step) under {c['profile']}: "
                    f"{a['macs_per_image']:.3g} MACs = {_mj(a['energy_per_image_J'])} per image, "
                    f"{a['energy_per_image_J'] / c['energy_per_image_J']:.2g}x the SNN's.")
    cats = ["synaptic", "input synaptic", "input messages", "neuron", "routing", "chip-to-chip", "static"]
    body += ["", "Energy per image by category (least-energy mapping, at the values):", "",
             "| profile | " + " | ".join(cats) + " |", "|---|" + "---:|" * len(cats)]
    for c in report["cost"]:
        cat = c["by_category_J"]
        body.append(f"| {c['profile']} | " + " | ".join(_mj(cat.get(k, cat.get("input MAC") if k == "input synaptic"
                                                                         else None)) for k in cats) + " |")
    for c in report["cost"]:
        if c.get("sensitivity"):
            top = c["sensitivity"][:3]
            body += ["", f"{c['profile']}: the quantities that move the total most (each at its bounds, the others at "
                         f"their values): " + "; ".join(f"{r['quantity']} {_mj(r['at_low']['energy_J'])} to "
                                                        f"{_mj(r['at_high']['energy_J'])}" for r in top) + "."]
    d = report["fixed_vs_float"]
    body += ["", twin, "",
             f"Fixed point against the float model (same noise, {args.n} images): mean |pixel difference| "
             f"{d['mean_abs_pixel_diff']:.4f}, max {d['max_abs_pixel_diff']:.3f} (pixels span 2).", "",
             "| simulator | images | seconds per image | images/s |", "|---|---:|---:|---:|",
             f"| Lava `Loihi2SimCfg` fixed point (CPU, pipelined) | {args.n_lava} | {lava_s / args.n_lava:.3g} | "
             f"{lava_rate:.3g} |",
             f"| spikediff bit-exact simulator ({args.device}, batched) | {args.n} | {1 / sim_rate:.3g} | {sim_rate:.3g} |",
             "", f"Speedup: {sim_rate / lava_rate:.0f}x. Identical images and spike counts on the Lava images: "
                 f"{'yes' if exact else 'NO'}."]
    write_report(args.out, "Hardware cost model and bit-exact simulator", payload, body)


if __name__ == "__main__":
    main()
