"""``spikediff report``: does the sampler fit a chip, what does an image cost, what does fixed point do.

It samples with the bit-exact fixed-point simulator (what Lava's fixed-point run and a chip compute),
counts events, maps the network onto each chip profile and prices the events with every profile. It
writes report.md and report.json (every figure, with the profiles' numbers and sources) and PNG figures
into one directory, each file atomically.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..atomic import atomic_path, write_json_atomic

DEFAULT_PROFILES = ("loihi1", "loihi2", "ac_mac_45nm")


def make_report(model, schedule, out_dir, n: int = 16, steps: int = 20, profiles=DEFAULT_PROFILES,
                overrides: dict | None = None, device: str = "cpu", seed: int = 0, batch_size: int | None = None,
                compare_float: bool = True, progress: bool = True, source: str = "") -> dict:
    import torch

    from .. import SpikediffError
    from ..diffusion.sampler import initial_noise, sample_torch
    from ..export.folded import fold
    from ..export.nir_graph import to_nir
    from ..images import save_grid
    from .fixed_sampler import sample_fixed
    from .plots import plot_activity, plot_energy, plot_raster

    loaded = load_profiles(profiles, overrides)  # bad names fail before any work
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise SpikediffError(f"output {out}: exists and is not a directory")
    cfg = model.config
    noise = initial_noise(n, (cfg.in_channels, cfg.image_size, cfg.image_size), seed)
    graph = to_nir(model, schedule)
    plan = fold(graph).plan
    every_neuron = {k: np.arange(int(np.prod(plan.shapes[k]))) for k in plan.populations if k != plan.readout}
    t0 = time.perf_counter()
    sim = sample_fixed(graph, noise.numpy(), steps, progress=progress, device=device, batch_size=batch_size,
                       record=every_neuron)  # image 0's spikes of every neuron, for the raster
    sim_s = time.perf_counter() - t0
    ev, costs, mappings = price(sim, loaded)

    result = {
        "source": source, "images": n, "denoising_steps": steps, "snn_steps": ev.num_steps, "seed": seed,
        "simulator": {"device": str(device), "seconds": sim_s, "images_per_s": n / sim_s},
        "events_per_image": ev.to_dict(), "mapping": mappings, "cost": costs,
        "quantization": _quantization(sim["fixed_point"]),
        "profiles": {prof.name: prof.to_dict() for prof in loaded},
    }
    if compare_float:
        with torch.no_grad():
            floating = sample_torch(model, schedule, n, steps, noise=noise, progress=False).numpy()
        diff = np.abs(sim["images"] - floating)
        result["fixed_vs_float"] = {"mean_abs_pixel_diff": float(diff.mean()), "max_abs_pixel_diff": float(diff.max()),
                                    "pixel_range": 2.0}
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "samples": save_grid(torch.from_numpy(sim["images"][:64]), out / "samples.png"),
        "energy": plot_energy(costs, out / "energy.png"),
        "raster": plot_raster(sim["raster"], ev.num_steps, out / "raster.png", steps_shown=min(steps, 3)),
        "activity": plot_activity(ev, out / "activity.png"),
    }
    result["files"] = {k: v.name for k, v in files.items()}
    write_json_atomic(result, out / "report.json")
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text(to_markdown(result))
    result["dir"] = str(out)
    return result


def load_profiles(profiles, overrides: dict | None) -> list:
    """The named (or TOML) profiles with ``--set`` overrides applied; an override of an unused profile is an error."""
    from .. import SpikediffError
    from .profiles import load_profile

    overrides = overrides or {}
    loaded = [load_profile(p) for p in (profiles or DEFAULT_PROFILES)]
    unknown = set(overrides) - {p.name for p in loaded}
    if unknown:
        raise SpikediffError(f"--set names profile(s) {', '.join(sorted(unknown))}, which this report does not use "
                             f"(profiles: {', '.join(p.name for p in loaded)})")
    return [p.with_overrides(overrides.get(p.name, {})) for p in loaded]


def price(sim: dict, profiles: list) -> tuple:
    """(events per image, cost per profile, chip mapping per chip profile) of one network's simulator run."""
    from .connectivity import Connectivity
    from .cost import estimate
    from .events import count_events
    from .mapping import map_to_cores

    conn = Connectivity(sim["folded"], sim["fixed_point"])
    ev = count_events(sim, conn)
    costs, mappings = [], {}
    for prof in profiles:
        mapping = map_to_cores(sim["folded"], conn, prof) if prof.is_chip else None
        if mapping is not None:
            mappings[prof.name] = mapping.summary()
        costs.append(estimate(ev, prof, mapping))
    return ev, costs, mappings


def _quantization(fx) -> dict:
    return {"input_scale": fx.input_scale, "per_layer": {k: {kk: (float(vv) if vv is not None else None)
                                                             for kk, vv in v.items()} for k, v in fx.errors.items()}}


def _si(value: float, unit: str) -> str:
    for factor, prefix in ((1, ""), (1e-3, "m"), (1e-6, "µ"), (1e-9, "n"), (1e-12, "p")):
        if abs(value) >= factor or factor == 1e-12:
            return f"{value / factor:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def cost_notes(costs: list, twin_runs: str) -> list:
    """Markdown bullets: what each profile leaves out, and the ANN twin beside the SNN."""
    lines = []
    for c in costs:
        if c["left_out"]:
            lines.append(f"- {c['profile']} leaves out: {', '.join(c['left_out'])} (no numbers in the profile).")
        if "ann_twin" in c:
            a = c["ann_twin"]
            lines.append(f"- ANN twin (same layers, ReLU, dense, {twin_runs}) under {c['profile']}: "
                         f"{a['macs_per_image']:.3g} MACs, {_si(a['energy_per_image_J'], 'J')} per image, against "
                         f"{_si(c['energy_per_image_J'], 'J')} for the SNN ({a['energy_per_image_J'] / c['energy_per_image_J']:.2g}x).")
    return lines


def to_markdown(r: dict) -> str:
    ev = r["events_per_image"]
    lines = [f"# Hardware report{': ' + r['source'] if r['source'] else ''}", "",
             f"{r['images']} images x {r['denoising_steps']} DDIM steps x T = {r['snn_steps']}, Loihi fixed point, "
             f"bit-exact simulator ({r['simulator']['device']}, {r['simulator']['images_per_s']:.3g} images/s). "
             "Figures are per generated image.", "",
             "![samples](samples.png)", "", "## Energy and time per image", "",
             "| profile | energy / image | " + " | ".join(["synaptic", "input", "neuron", "routing", "static"])
             + " | time / image (pipelined) | latency (one image) | cores | chips | fits one chip |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for c in r["cost"]:
        cat = c["by_category_J"]
        inp = cat.get("input synaptic", cat.get("input MAC"))
        m = r["mapping"].get(c["profile"])
        t = c.get("time")
        cells = [_si(cat[k], "J") if k in cat else "-" for k in ("synaptic",)] + [_si(inp, "J") if inp else "-"] + [
            _si(cat[k], "J") if k in cat else "-" for k in ("neuron", "routing", "static")]
        lines.append(f"| {c['profile']} | **{_si(c['energy_per_image_J'], 'J')}** | " + " | ".join(cells)
                     + f" | {_si(t['per_image_s'], 's') if t else '-'} | {_si(t['single_image_latency_s'], 's') if t else '-'}"
                     + f" | {m['cores'] if m else '-'} | {m['chips'] if m else '-'} | "
                     + f"{('yes' if m['fits_one_chip'] else 'no') if m else '-'} |")
    lines.append("")
    lines += cost_notes(r["cost"], "once per DDIM step")
    lines += ["", "![energy per layer and category](energy.png)", "", "## Events per image", "",
              "| layer | neurons | firing rate | spikes | synaptic ops | graded input ops | neuron updates (active) "
              "| ANN twin MACs |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, pop in ev["populations"].items():
        rate = f"{pop['firing_rate']:.3f}" if pop["firing_rate"] is not None else "(readout)"
        lines.append(f"| {name} | {pop['neurons']} | {rate} | {pop['spikes']:.4g} | {pop['synaptic_ops']:.4g} | "
                     f"{pop['input_synaptic_ops']:.4g} | {pop['neuron_updates']:.4g} ({pop['active_neuron_updates']:.4g}) "
                     f"| {pop['ann_twin_macs']:.4g} |")
    tot = ev["totals"]
    lines += [f"| total | | | {tot['spikes']:.4g} | {tot['synaptic_ops']:.4g} | {tot['input_synaptic_ops']:.4g} | "
              f"{tot['neuron_updates']:.4g} ({tot['active_neuron_updates']:.4g}) | {tot['ann_twin_macs']:.4g} |", "",
              f"Lava steps per image: {ev['lava_steps_per_image']:.4g} with {r['images']} images pipelined, "
              f"{ev['lava_steps_single_image']} for one image alone.", "",
              "![activity per denoising step](activity.png)", "", "![spike raster](raster.png)", ""]
    if r["mapping"]:
        lines += ["## Chip mapping", "", "| profile | layer | cores | neurons | synapses | core size bound by |",
                  "|---|---|---:|---:|---:|---|"]
        for prof, m in r["mapping"].items():
            for name, s in m["populations"].items():
                lines.append(f"| {prof} | {name} | {s['cores']} | {s['neurons']} | {s['synapses']} | {s['bound_by']} |")
        lines.append("")
    q = r["quantization"]
    lines += ["## Fixed point", "", f"Host input sent as round(x * {q['input_scale']}).", ""]
    if "fixed_vs_float" in r:
        d = r["fixed_vs_float"]
        lines += [f"Fixed point against the float model on the same noise: mean |pixel difference| "
                  f"{d['mean_abs_pixel_diff']:.4f}, max {d['max_abs_pixel_diff']:.3f} (pixels span 2).", ""]
    lines += ["| weight node | max abs error | rms error | largest weight | largest integer |", "|---|---:|---:|---:|---:|"]
    for name, e in q["per_layer"].items():
        if "max_abs_error" in e:
            lines.append(f"| {name} | {e['max_abs_error']:.3g} | {e['rms_error']:.3g} | {e['max_abs_weight']:.3g} | "
                         f"{int(e['max_int'])} |")
    lines += ["", "| layer | scale | threshold (integer) | threshold error | max bias error |", "|---|---:|---:|---:|---:|"]
    for name, e in q["per_layer"].items():
        if "scale" in e:
            vth = "-" if e["vth"] is None else int(e["vth"])
            lines.append(f"| {name} | {int(e['scale'])} | {vth} | {e['threshold_error']:.3g} | {e['max_bias_error']:.3g} |")
    lines += ["", "## Profiles", ""]
    for prof in r["profiles"].values():
        lines += [f"**{prof['name']}**: {prof['title']}", "", "| quantity | value | source |", "|---|---:|---|"]
        for key, qv in prof["quantities"].items():
            lines.append(f"| {key} | {qv['value']:g} {qv['unit']} | {qv['source']} |")
        lines.append("")
    return "\n".join(lines) + "\n"
