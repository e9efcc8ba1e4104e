"""``spikediff report`` for a Spiking-Diffusion sampler: its two networks priced like the DDIM denoiser.

The SDID network runs ``steps`` evaluations per image, the token decoder one; both are mapped onto the
chip together (they are resident at once), and an image costs the sum of the two runs: energies and times
add, static power is paid over both. Written into one directory: report.md, report.json, samples.png,
energy.png (layers of both networks, prefixed ``sdid/`` and ``decoder/``).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..atomic import atomic_path, write_json_atomic
from .report import DEFAULT_PROFILES, _si, cost_notes, load_profiles, price

PARTS = ("sdid", "decoder")


def combine(costs: dict) -> list:
    """Per profile, one cost for the image: categories summed over the parts, layers prefixed by their part."""
    combined = []
    for per_part in zip(*(costs[p] for p in PARTS)):
        c = {"profile": per_part[0]["profile"], "title": per_part[0]["title"], "by_category_J": {}, "by_layer_J": {},
             "left_out": sorted(set().union(*(x["left_out"] for x in per_part)))}
        for part, x in zip(PARTS, per_part):
            for cat, joules in x["by_category_J"].items():
                c["by_category_J"][cat] = c["by_category_J"].get(cat, 0.0) + joules
            c["by_layer_J"].update({f"{part}/{k}": v for k, v in x["by_layer_J"].items()})
        c["energy_per_image_J"] = float(sum(c["by_category_J"].values()))
        if all("time" in x for x in per_part):
            c["time"] = {"per_image_s": sum(x["time"]["per_image_s"] for x in per_part),
                         "single_image_latency_s": sum(x["time"]["single_image_latency_s"] for x in per_part)}
        if all("ann_twin" in x for x in per_part):
            macs = sum(x["ann_twin"]["macs_per_image"] for x in per_part)
            joules = sum(x["ann_twin"]["energy_per_image_J"] for x in per_part)
            c["ann_twin"] = {"macs_per_image": macs, "energy_per_image_J": joules}
        combined.append(c)
    return combined


def make_vq_report(model, out_dir, n: int = 16, steps: int = 20, profiles=DEFAULT_PROFILES,
                   overrides: dict | None = None, device: str = "cpu", seed: int = 0, batch_size: int | None = None,
                   compare_float: bool = True, progress: bool = True, source: str = "") -> dict:
    import torch

    from .. import SpikediffError
    from ..export.nir_graph import vq_graphs
    from ..images import save_grid
    from .plots import plot_energy
    from .vq_fixed_sampler import sample_vq_fixed

    loaded = load_profiles(profiles, overrides)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise SpikediffError(f"output {out}: exists and is not a directory")
    t0 = time.perf_counter()
    sim = sample_vq_fixed(vq_graphs(model), n, steps, seed=seed, device=device, batch_size=batch_size,
                          progress=progress)
    sim_s = time.perf_counter() - t0
    events, costs, mappings = {}, {}, {}
    for part in PARTS:
        ev, costs[part], mappings[part] = price(sim["parts"][part], loaded)
        events[part] = ev.to_dict()
    combined = combine(costs)
    chips = {}
    for prof in mappings["sdid"]:
        m = [mappings[p][prof] for p in PARTS]
        cores = sum(x["cores"] for x in m)
        chips[prof] = {"cores": cores, "chips": -(-cores // m[0]["cores_per_chip"]),
                       "fits_one_chip": cores <= m[0]["cores_per_chip"], **{p: x["cores"] for p, x in zip(PARTS, m)}}
    result = {"source": source, "model": "spiking-vq", "images": n, "unmasking_steps": steps,
              "snn_steps": {p: events[p]["snn_steps"] for p in PARTS}, "seed": seed,
              "simulator": {"device": str(device), "seconds": sim_s, "images_per_s": n / sim_s},
              "events_per_image": events, "mapping": mappings, "chips": chips, "cost": combined,
              "cost_by_network": costs, "profiles": {prof.name: prof.to_dict() for prof in loaded}}
    if compare_float:  # the float model on the same draws: its tokens, then its images (what model.sample does)
        from ..diffusion.absorbing import sample_tokens

        tokens = sample_tokens(model.sdid, n, steps, seed=seed, schedule=model.mask_schedule, progress=False)
        diff = np.abs(sim["images"] - model.decode(tokens).numpy())
        result["fixed_vs_float"] = {"mean_abs_pixel_diff": float(diff.mean()), "max_abs_pixel_diff": float(diff.max()),
                                    "tokens_equal": float(np.mean(sim["tokens"] == tokens.numpy()))}
    out.mkdir(parents=True, exist_ok=True)
    files = {"samples": save_grid(torch.from_numpy(sim["images"][:64]), out / "samples.png"),
             "energy": plot_energy(combined, out / "energy.png")}
    result["files"] = {k: v.name for k, v in files.items()}
    write_json_atomic(result, out / "report.json")
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text(to_markdown(result))
    result["dir"] = str(out)
    return result


def to_markdown(r: dict) -> str:
    t = r["snn_steps"]
    lines = [f"# Hardware report (spiking-vq){': ' + r['source'] if r['source'] else ''}", "",
             f"{r['images']} images: {r['unmasking_steps']} unmasking steps of the SDID network (T = {t['sdid']}), "
             f"then one pass of the token decoder (T = {t['decoder']}); Loihi fixed point, bit-exact simulator "
             f"({r['simulator']['device']}, {r['simulator']['images_per_s']:.3g} images/s). Figures are per image.", "",
             "![samples](samples.png)", "", "## Energy and time per image", "",
             "| profile | energy / image | SDID | decoder | time / image (pipelined) | cores (SDID + decoder) | chips "
             "| fits one chip |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    for c, cs, cd in zip(r["cost"], r["cost_by_network"]["sdid"], r["cost_by_network"]["decoder"]):
        m = r["chips"].get(c["profile"])
        tm = c.get("time")
        lines.append(f"| {c['profile']} | **{_si(c['energy_per_image_J'], 'J')}** | {_si(cs['energy_per_image_J'], 'J')} "
                     f"| {_si(cd['energy_per_image_J'], 'J')} | {_si(tm['per_image_s'], 's') if tm else '-'} | "
                     + (f"{m['cores']} ({m['sdid']} + {m['decoder']}) | {m['chips']} | "
                        f"{'yes' if m['fits_one_chip'] else 'no'} |" if m else "- | - | - |"))
    lines.append("")
    lines += cost_notes(r["cost"], "once per unmasking step, the decoder once")
    lines += ["", "![energy per layer and category](energy.png)", "", "## Events per image", "",
              "| network | layer | neurons | firing rate | spikes | synaptic ops | neuron updates (active) |",
              "|---|---|---:|---:|---:|---:|---:|"]
    for part in PARTS:
        for name, pop in r["events_per_image"][part]["populations"].items():
            rate = f"{pop['firing_rate']:.3f}" if pop["firing_rate"] is not None else "(readout)"
            lines.append(f"| {part} | {name} | {pop['neurons']} | {rate} | {pop['spikes']:.4g} | {pop['synaptic_ops']:.4g} "
                         f"| {pop['neuron_updates']:.4g} ({pop['active_neuron_updates']:.4g}) |")
    if "fixed_vs_float" in r:
        d = r["fixed_vs_float"]
        lines += ["", "## Fixed point", "", f"Against the float model with the same draws: {d['tokens_equal']:.1%} of "
                  f"tokens equal; mean |pixel difference| {d['mean_abs_pixel_diff']:.4f}, max "
                  f"{d['max_abs_pixel_diff']:.3f} (pixels span 2)."]
    lines += ["", "Profiles, their numbers and sources: report.json (`profiles`)."]
    return "\n".join(lines) + "\n"
