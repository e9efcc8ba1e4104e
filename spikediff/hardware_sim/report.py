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
                compare_float: bool = True, progress: bool = True, source: str = "", bias_correction: bool = True,
                **options) -> dict:
    """The report of any sampler: its networks compiled once in fixed point, sampled with the bit-exact
    simulator, each network's events priced; an image costs the sum (the loop network ``steps`` times, a
    final decoder once), all networks resident on the chip together. ``bias_correction=False``: compiled without
    the readouts' bias correction (which runs the network on 160 calibration inputs three times, most of the
    compile of a large U-Net; without it a readout has one constant synapse less, and the images, hence the
    later steps' spikes, differ a little)."""
    import torch

    from .. import SpikediffError
    from ..diffusion import kinds
    from ..export.deployment import compile_sampler
    from ..export.nir_graph import sampler_graphs
    from ..images import save_grid
    from .plots import plot_activity, plot_energy, plot_raster
    from .sampler import sample_sim

    loaded = load_profiles(profiles, overrides)  # bad names fail before any work
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise SpikediffError(f"output {out}: exists and is not a directory")
    kind = kinds.of_model(model)
    options = kind.options(**options)
    # compact: a U-Net's derived kernels held as merged taps, never dense (the same integers; the paper's width fits)
    sd = compile_sampler(sampler_graphs(model, schedule, compact=True), fixed_point=True,
                         bias_correction=bias_correction)
    plan = sd.loop.plan
    every_neuron = {k: np.arange(pop.size) for k, pop in plan.populations.items() if pop.spiking}
    t0 = time.perf_counter()
    sim = sample_sim(sd, n, steps, seed=seed, device=device, batch_size=batch_size, progress=progress,
                     record=every_neuron, **options)  # image 0's spikes of every neuron, for the raster
    sim_s = time.perf_counter() - t0
    events, costs, mappings = price_networks(sim["parts"], loaded)
    combined = combine(costs) if len(costs) > 1 else costs["denoiser"]
    result = {
        "source": source, "kind": kind.name, "images": n, "denoising_steps": sim["program"].steps,
        "bias_correction": bias_correction,
        "snn_steps": {role: sd.networks[role].num_steps for role in sim["parts"]}, "seed": seed, **options,
        "simulator": {"device": str(device), "seconds": sim_s, "images_per_s": n / sim_s},
        "events_per_image": {role: ev.to_dict() for role, ev in events.items()},
        "mapping": mappings, "chips": chips_together(mappings), "cost": combined,
        "cost_by_network": costs if len(costs) > 1 else None,
        "headline": headline(combined, chips_together(mappings)),
        "quantization": {role: _quantization(sd.networks[role].fixed) for role in sim["parts"]},
        "profiles": {prof.name: prof.to_dict() for prof in loaded},
    }
    if compare_float:
        floating = kind.sample_torch(model, schedule, n, steps, seed=seed, progress=False, **options)
        diff = np.abs(sim["images"] - floating.numpy())
        result["fixed_vs_float"] = {"mean_abs_pixel_diff": float(diff.mean()), "max_abs_pixel_diff": float(diff.max()),
                                    "pixel_range": 2.0}
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "samples": save_grid(torch.from_numpy(sim["images"][:64]), out / "samples.png"),
        "energy": plot_energy(combined, out / "energy.png"),
        "raster": plot_raster(sim["raster"], sd.loop.num_steps, out / "raster.png",
                              steps_shown=min(sim["program"].steps, 3)),
        "activity": plot_activity(events["denoiser"], out / "activity.png"),
    }
    result["files"] = {k: v.name for k, v in files.items()}
    write_json_atomic(result, out / "report.json")
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text(to_markdown(result))
    result["dir"] = str(out)
    return result


def make_graph_report(dep, inputs, out_dir, profiles=DEFAULT_PROFILES, overrides: dict | None = None,
                      device: str = "cpu", source: str = "", progress: bool = True) -> dict:
    """The report of any compiled fixed-point network on given inputs: per inference (one evaluation of T
    steps per input), the same events, mapping and prices as for a sampler."""
    from .. import SpikediffError
    from ..export.simulator import EventTally, Simulator
    from .plots import plot_activity, plot_energy

    loaded = load_profiles(profiles, overrides)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise SpikediffError(f"output {out}: exists and is not a directory")
    sim = Simulator(dep, device)
    tally = EventTally(dep.plan)
    res = sim.evaluate(inputs)
    tally.add(res)
    n = len(next(iter(res["spikes"].values()))) if res["spikes"] else len(next(iter(res["states"].values())))
    counters = {k: {"active": c.sum(1).cpu().numpy()[:, None]} for k, c in res["spikes"].items()}
    part = {**tally.to_dict(), "deployment": dep, "items": n, "evaluations": 1, "counters": counters}
    ev, costs, mappings = price(part, loaded)
    result = {"source": source, "kind": "graph", "images": n, "denoising_steps": 1,
              "snn_steps": {"network": dep.num_steps}, "events_per_image": {"network": ev.to_dict()},
              "mapping": {"network": mappings}, "chips": chips_together({"network": mappings}), "cost": costs,
              "headline": headline(costs, chips_together({"network": mappings})), "cost_by_network": None,
              "quantization": {"network": _quantization(dep.fixed)},
              "profiles": {prof.name: prof.to_dict() for prof in loaded}, "per": "inference"}
    out.mkdir(parents=True, exist_ok=True)
    files = {"energy": plot_energy(costs, out / "energy.png"), "activity": plot_activity(ev, out / "activity.png")}
    result["files"] = {k: v.name for k, v in files.items()}
    write_json_atomic(result, out / "report.json")
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text(to_markdown(result))
    result["dir"] = str(out)
    return result


def _add(a, b):
    """Sum of two figures of the same form (numbers, [low, high] lists, None)."""
    if a is None or b is None:
        return None
    if isinstance(a, list):
        return [x + y for x, y in zip(a, b, strict=True)]
    return a + b


def combine(costs: dict) -> list:
    """Per profile, one cost for the image: categories summed over the networks, layers prefixed by role;
    ranges, single-image figures and the sensitivity summed the same way (each network's bounds move
    together)."""
    roles = list(costs)
    combined = []
    for per_part in zip(*(costs[r] for r in roles)):
        c = {"profile": per_part[0]["profile"], "title": per_part[0]["title"], "by_category_J": {}, "by_layer_J": {},
             "left_out": sorted(set().union(*(x["left_out"] for x in per_part))),
             "notes": sorted(set().union(*(x.get("notes", []) for x in per_part)))}
        for role, x in zip(roles, per_part):
            for cat, joules in x["by_category_J"].items():
                c["by_category_J"][cat] = c["by_category_J"].get(cat, 0.0) + joules
            c["by_layer_J"].update({f"{role}/{k}": v for k, v in x["by_layer_J"].items()})
        c["energy_per_image_J"] = float(sum(c["by_category_J"].values()))
        c["range"] = {k: _combine_key(per_part, lambda x, k=k: x["range"].get(k)) for k in per_part[0]["range"]}
        if all("time" in x for x in per_part):
            c["time"] = {"per_image_s": sum(x["time"]["per_image_s"] for x in per_part),
                         "single_image_latency_s": sum(x["time"]["single_image_latency_s"] for x in per_part)}
            c["single_image"] = {k: _combine_key(per_part, lambda x, k=k: x["single_image"][k])
                                 for k in per_part[0]["single_image"]}
        if all("fewest_cores" in x for x in per_part):
            c["mapping"] = per_part[0].get("mapping")
            c["fewest_cores"] = {k: _combine_key(per_part, lambda x, k=k: x["fewest_cores"][k])
                                 for k in per_part[0]["fewest_cores"]}
        c["sensitivity"] = _combine_sensitivity(per_part)
        if all("ann_twin" in x for x in per_part):
            macs = sum(x["ann_twin"]["macs_per_image"] for x in per_part)
            joules = sum(x["ann_twin"]["energy_per_image_J"] for x in per_part)
            c["ann_twin"] = {"macs_per_image": macs, "energy_per_image_J": joules}
        combined.append(c)
    return combined


def _combine_key(parts, get):
    out = get(parts[0])
    for x in parts[1:]:
        out = _add(out, get(x))
    return out


def _combine_sensitivity(parts) -> list:
    """The networks' sensitivity rows summed per quantity: a network that does not depend on a quantity
    contributes its totals at the values."""
    keys = []
    for x in parts:
        keys += [r["quantity"] for r in x.get("sensitivity", []) if r["quantity"] not in keys]
    rows = []
    for key in keys:
        row = None
        for x in parts:
            mine = next((r for r in x.get("sensitivity", []) if r["quantity"] == key), None)
            flat = {"energy_J": x["energy_per_image_J"], "time_s": x.get("time", {}).get("per_image_s")}
            ends = {b: dict(mine[b]) if mine else dict(flat) for b in ("at_low", "at_high")}
            if row is None:
                row = {"quantity": key, **{k: (mine or {}).get(k) for k in ("unit", "value", "low", "high")}, **ends}
            else:
                row["unit"] = row["unit"] or (mine or {}).get("unit")
                for k in ("value", "low", "high"):
                    row[k] = row[k] if row[k] is not None else (mine or {}).get(k)
                for b in ("at_low", "at_high"):
                    row[b] = {k: _add(row[b][k], ends[b][k]) for k in ("energy_J", "time_s")}
        row["energy_swing_J"] = abs(row["at_high"]["energy_J"] - row["at_low"]["energy_J"])
        rows.append(row)
    return sorted(rows, key=lambda r: -r["energy_swing_J"])


def chips_together(mappings: dict) -> dict:
    """Per chip profile: cores and chips with every network resident at once (their least-energy mappings, and
    their fewest-cores ones)."""
    roles = list(mappings)
    chips = {}
    for prof in mappings[roles[0]]:
        m = [mappings[r][prof] for r in roles]
        cores = sum(x["cores"] for x in m)
        per_chip = m[0]["cores_per_chip"]
        chips[prof] = {"cores": cores, "chips": -(-cores // per_chip), "fits_one_chip": cores <= per_chip,
                       **{r: x["cores"] for r, x in zip(roles, m)}}
        if all("fewest_cores" in x for x in m):
            few = sum(x["fewest_cores"]["cores"] for x in m)
            chips[prof]["fewest_cores"] = {"cores": few, "chips": -(-few // per_chip), "fits_one_chip": few <= per_chip}
    return chips


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


def price(part: dict, profiles: list) -> tuple:
    """(events per image, cost per profile, chip mapping per chip profile) of one network's simulator run."""
    ev, costs, mappings = price_networks({"network": part}, profiles)
    return ev["network"], costs["network"], mappings["network"]


def price_networks(parts: dict, profiles: list) -> tuple:
    """({role: events}, {role: [cost per profile]}, {role: {chip profile: mapping summary}}) of a run's networks,
    resident on the chips together. Each is mapped onto the fewest cores and onto the cores that cost the least
    energy (``mapping.balance``); the cost is the least-energy mapping's, with the fewest-cores figures beside it.
    Alone, a network's budgets run up to full chips and one chip more. With several networks, the chips their
    fewest-cores mappings need together are shared out: each may grow to its share of those chips' cores, in
    proportion to the square root of its work per image (which minimizes the sum of their busiest-core times),
    and static power is paid for all of them while each runs."""
    from .connectivity import Connectivity
    from .cost import energy, estimate, neuron_work
    from .events import count_events
    from .mapping import balance, map_to_cores

    prepared = {}
    for role, part in parts.items():
        dep = part["deployment"]
        conn = Connectivity(dep.folded, dep.fixed)
        prepared[role] = (dep, conn, count_events(part, conn))
    costs, mappings = {role: [] for role in parts}, {role: {} for role in parts}
    for prof in profiles:
        if not prof.is_chip:
            for role, (_dep, _conn, ev) in prepared.items():
                costs[role].append(estimate(ev, prof))
            continue
        fewest = {role: map_to_cores(dep.folded, conn, prof) for role, (dep, conn, _ev) in prepared.items()}
        work = {role: neuron_work(ev, prof) for role, (_dep, _conn, ev) in prepared.items()}
        shared = len(parts) > 1
        powered, share = None, {}  # powered: chips drawing static power (None: each network's own)
        if shared:
            per_chip = int(prof.get("cores_per_chip"))
            used = sum(len(m.cores) for m in fewest.values())
            powered = -(-used // per_chip)
            weight = {role: float(np.sqrt(sum(float(np.sum(w)) for w in work[role].values()))) for role in parts}
            spare = powered * per_chip - used
            share = {role: len(fewest[role].cores) + int(spare * weight[role] / max(sum(weight.values()), 1e-300))
                     for role in parts}
        def balanced(role, budget, prof=prof, chips=powered, work=work, fewest=fewest):
            dep, conn, ev = prepared[role]
            return balance(dep.folded, conn, prof, work[role], fewest[role],
                           lambda mp: energy(ev, prof, mp, chips), budgets=None if budget is None else [budget])

        found = {role: balanced(role, share.get(role)) for role in parts}
        powered_fewest = powered
        if shared:
            found, powered = _fit_shared(found, fewest, share, powered, per_chip, balanced,
                                         lambda maps, chips, prof=prof: sum(energy(prepared[r][2], prof, maps[r], chips)
                                                                            for r in parts))
        for role, (_dep, _conn, ev) in prepared.items():
            best, tried = found[role]
            c = estimate(ev, prof, best, powered)
            c["mapping"] = "least energy"
            c["budgets_tried"] = [{"cores": k, "energy_per_image_J": j} for k, j in tried]
            c["fewest_cores"] = brief(estimate(ev, prof, fewest[role], powered_fewest), fewest[role])
            costs[role].append(c)
            mappings[role][prof.name] = {**best.summary(), "fewest_cores": fewest[role].summary()}
    return {role: p[2] for role, p in prepared.items()}, costs, mappings


def _fit_shared(found: dict, fewest: dict, share: dict, powered: int, per_chip: int, balanced, total) -> tuple:
    """({role: (mapping, tried)}, chips powered) for networks sharing chips. A work-balanced core that does not fit
    is split further, so the balanced mappings can spill onto another chip: then each network that outgrew its
    share is balanced again on that many fewer cores, until they fit or reach their fewest-cores count. The
    cheapest in total of the spilled mappings (on the chips they need), the refitted ones and the fewest-cores
    ones (on their own chips) is kept."""
    def chips(maps):
        return max(powered, -(-sum(len(m.cores) for m in maps.values()) // per_chip))

    first = {r: m for r, (m, _t) in found.items()}
    tried = {r: list(t) for r, (_m, t) in found.items()}
    options = [(first, chips(first)), (fewest, powered)]
    refit, share, refitted = dict(first), dict(share), False
    for _attempt in range(8):
        if chips(refit) <= powered:
            break
        grown = [r for r in refit if len(refit[r].cores) > share[r] and share[r] > len(fewest[r].cores)]
        if not grown:
            break
        for r in grown:
            share[r] = max(len(fewest[r].cores), 2 * share[r] - len(refit[r].cores))
            refit[r], t = balanced(r, share[r])
            tried[r] += t
            refitted = True
    if refitted and chips(refit) <= powered:
        options.append((refit, powered))
    maps, used = min(options, key=lambda o: total(o[0], o[1]))
    return {r: (maps[r], sorted(set(tried[r]))) for r in found}, used


def brief(c: dict, mapping) -> dict:
    """The headline figures of one cost: energy and time per image, pipelined and alone, with their ranges."""
    out = {"cores": len(mapping.cores), "energy_per_image_J": c["energy_per_image_J"],
           "energy_range_J": c["range"]["energy_per_image_J"]}
    if "time" in c:
        s = c["single_image"]
        out.update({"time_per_image_s": c["time"]["per_image_s"], "time_range_s": c["range"]["time_per_image_s"],
                    "single_image_J": s["energy_J"], "single_image_range_J": s["energy_range_J"],
                    "single_image_time_s": s["time_s"], "single_image_time_range_s": s["time_range_s"]})
    return out


def headline(costs: list, chips: dict) -> dict:
    """Per profile, what a table of models needs: energy and time per image, pipelined and for one image alone,
    each as value with [low, high], for the least-energy mapping and the fewest-cores one."""
    out = {}
    for c in costs:
        entry = {"energy_per_image_J": c["energy_per_image_J"], "energy_range_J": c["range"]["energy_per_image_J"]}
        if "time" in c:
            s = c["single_image"]
            entry.update({"mapping": c.get("mapping"), "cores": chips[c["profile"]]["cores"],
                          "chips": chips[c["profile"]]["chips"],
                          "time_per_image_s": c["time"]["per_image_s"], "time_range_s": c["range"]["time_per_image_s"],
                          "single_image_J": s["energy_J"], "single_image_range_J": s["energy_range_J"],
                          "single_image_time_s": s["time_s"], "single_image_time_range_s": s["time_range_s"]})
        if "fewest_cores" in c:
            entry["fewest_cores"] = {**c["fewest_cores"], "chips": chips[c["profile"]]["fewest_cores"]["chips"]}
        out[c["profile"]] = entry
    return out


def _quantization(fx) -> dict:
    scales = fx.input_scales
    per_layer = {k: {kk: (float(vv) if vv is not None else None) for kk, vv in v.items()} for k, v in fx.errors.items()}
    return {"input_scale": next(iter(scales.values())) if len(scales) == 1 else scales, "per_layer": per_layer}


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
        lines += [f"- {c['profile']}: {note}." for note in c.get("notes", [])]
        if "ann_twin" in c:
            a = c["ann_twin"]
            lines.append(f"- ANN twin (same layers, ReLU, dense, {twin_runs}) under {c['profile']}: "
                         f"{a['macs_per_image']:.3g} MACs, {_si(a['energy_per_image_J'], 'J')} per image, against "
                         f"{_si(c['energy_per_image_J'], 'J')} for the SNN "
                         f"({a['energy_per_image_J'] / c['energy_per_image_J']:.2g}x).")
    return lines


def _range(value, bounds, unit: str) -> str:
    """value [low, high] in one SI prefix."""
    if value is None:
        return "-"
    lo, hi = bounds if bounds else (value, value)
    return f"{_si(value, unit)} [{_si(lo, unit)}, {_si(hi, unit)}]"


CATEGORIES = ("synaptic", "input synaptic", "input MAC", "input messages", "neuron", "routing", "chip-to-chip",
              "static")


def energy_tables(r: dict, per: str, roles: list) -> list:
    """The headline (both mappings, pipelined and alone, with ranges), the energy by category and the
    sensitivity of the total to each uncertain quantity."""
    lines = [f"## Energy and time per {per}", "",
             "Every figure is value [low, high]: the profile's numbers at their values, and all at their low or all at "
             "their high bounds (each quantity's bounds and sources are in the profiles below). On a chip the network "
             "is mapped twice: onto the cores that cost the least energy (cores given to layers by their work, up to "
             "full chips: static power x time against per-core work) and onto the fewest cores; the quantities that "
             "set a mapping (memory, limits) stay at their values. Pipelined: images in "
             f"flight together; alone: one {per} through an idle chip (its latency).", "",
             f"| profile | mapping | cores | chips | energy / {per} (pipelined) | time / {per} (pipelined) | "
             f"energy, one {per} alone | latency, one {per} alone |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for c in r["cost"]:
        m = r["chips"].get(c["profile"])
        if "time" not in c:
            total = _range(c["energy_per_image_J"], c["range"]["energy_per_image_J"], "J")
            lines.append(f"| {c['profile']} | - | - | - | **{total}** | - | - | - |")
            continue
        s = c["single_image"]
        cores = f"{m['cores']}" + (f" ({' + '.join(str(m[x]) for x in roles)})" if len(roles) > 1 else "")
        lines.append(f"| {c['profile']} | least energy | {cores} | {m['chips']} | "
                     f"**{_range(c['energy_per_image_J'], c['range']['energy_per_image_J'], 'J')}** | "
                     f"{_range(c['time']['per_image_s'], c['range']['time_per_image_s'], 's')} | "
                     f"{_range(s['energy_J'], s['energy_range_J'], 'J')} | "
                     f"{_range(s['time_s'], s['time_range_s'], 's')} |")
        f = c.get("fewest_cores")
        if f:
            fm = m.get("fewest_cores", {})
            lines.append(f"| {c['profile']} | fewest cores | {f['cores']} | {fm.get('chips', '-')} | "
                         f"{_range(f['energy_per_image_J'], f['energy_range_J'], 'J')} | "
                         f"{_range(f['time_per_image_s'], f['time_range_s'], 's')} | "
                         f"{_range(f['single_image_J'], f['single_image_range_J'], 'J')} | "
                         f"{_range(f['single_image_time_s'], f['single_image_time_range_s'], 's')} |")
    cats = [k for k in CATEGORIES if any(k in c["by_category_J"] for c in r["cost"])]
    lines += ["", f"Energy per {per} by category (at the values; chips: the least-energy mapping):", "",
              "| profile | total | " + " | ".join(cats) + " |", "|---|---:|" + "---:|" * len(cats)]
    for c in r["cost"]:
        cat = c["by_category_J"]
        lines.append(f"| {c['profile']} | **{_si(c['energy_per_image_J'], 'J')}** | "
                     + " | ".join(_si(cat[k], "J") if k in cat else "-" for k in cats) + " |")
    lines.append("")
    if r.get("cost_by_network"):
        lines += ["| profile | " + " | ".join(roles) + " |", "|---|" + "---:|" * len(roles)]
        for i, c in enumerate(r["cost"]):
            per_role = (_si(r["cost_by_network"][role][i]["energy_per_image_J"], "J") for role in roles)
            lines.append(f"| {c['profile']} | " + " | ".join(per_role) + " |")
        lines.append("")
    for c in r["cost"]:
        rows = c.get("sensitivity") or []
        if not rows:
            continue
        lines += [f"What moves the {c['profile']} total most (each quantity at its low and its high bound, the others "
                  f"at their values; least-energy mapping, pipelined):", "",
                  f"| quantity | value [low, high] | energy / {per} at low | at high | time / {per} at low | at high |",
                  "|---|---:|---:|---:|---:|---:|"]
        for row in rows[:10]:
            t_lo, t_hi = row["at_low"]["time_s"], row["at_high"]["time_s"]
            lines.append(f"| {row['quantity']} | {row['value']:g} [{row['low']:g}, {row['high']:g}] {row['unit']} | "
                         f"{_si(row['at_low']['energy_J'], 'J')} | {_si(row['at_high']['energy_J'], 'J')} | "
                         f"{_si(t_lo, 's') if t_lo is not None else '-'} | "
                         f"{_si(t_hi, 's') if t_hi is not None else '-'} |")
        lines.append("")
    return lines


def to_markdown(r: dict) -> str:
    roles = list(r["events_per_image"])
    per = r.get("per", "image")
    t = r["snn_steps"]
    if r["kind"] == "graph":
        what = (f"{r['images']} inferences of T = {t['network']} steps, Loihi fixed point, bit-exact simulator. "
                f"Figures are per inference.")
    else:
        steps = f"{r['denoising_steps']} denoising steps of the {roles[0]} network (T = {t[roles[0]]})"
        rest = "".join(f", then one pass of the {role} (T = {t[role]})" for role in roles[1:])
        what = (f"{r['images']} images of the {r['kind']} sampler: {steps}{rest}; Loihi fixed point, bit-exact "
                f"simulator ({r['simulator']['device']}, {r['simulator']['images_per_s']:.3g} images/s). Figures are "
                f"per generated image.")
    lines = [f"# Hardware report ({r['kind']}){': ' + r['source'] if r['source'] else ''}", "", what, ""]
    if "samples" in r.get("files", {}):
        lines += ["![samples](samples.png)", ""]
    lines += energy_tables(r, per, roles)
    lines += cost_notes(r["cost"], "once per evaluation")
    lines += ["", "![energy per layer and category](energy.png)", "", f"## Events per {per}", "",
              "| network | layer | neurons | firing rate | spikes | synaptic ops | graded input ops | neuron updates "
              "(active) | ANN twin MACs |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for role in roles:
        ev = r["events_per_image"][role]
        for name, pop in ev["populations"].items():
            rate = f"{pop['firing_rate']:.3f}" if pop["firing_rate"] is not None else "(readout)"
            lines.append(f"| {role} | {name} | {pop['neurons']} | {rate} | {pop['spikes']:.4g} | {pop['synaptic_ops']:.4g} "
                         f"| {pop['input_synaptic_ops']:.4g} | {pop['neuron_updates']:.4g} "
                         f"({pop['active_neuron_updates']:.4g}) | {pop['ann_twin_macs']:.4g} |")
        tot = ev["totals"]
        lines.append(f"| {role} | total | | | {tot['spikes']:.4g} | {tot['synaptic_ops']:.4g} | "
                     f"{tot['input_synaptic_ops']:.4g} | {tot['neuron_updates']:.4g} ({tot['active_neuron_updates']:.4g}) "
                     f"| {tot['ann_twin_macs']:.4g} |")
    ev0 = r["events_per_image"][roles[0]]
    lines += ["", f"Lava steps per {per} of the {roles[0]} network: {ev0['lava_steps_per_image']:.4g} with "
              f"{r['images']} pipelined, {ev0['lava_steps_single_image']} for one alone.", "",
              "![activity per denoising step](activity.png)", ""]
    if "raster" in r.get("files", {}):
        lines += ["![spike raster](raster.png)", ""]
    if any(r["mapping"][role] for role in roles):
        lines += ["## Chip mapping", "", "| profile | mapping | network | layer | cores | neurons | synapses | "
                  "core size bound by |", "|---|---|---|---|---:|---:|---:|---|"]
        for role in roles:
            for prof, m in r["mapping"][role].items():
                for label, mm in (("least energy", m), ("fewest cores", m.get("fewest_cores"))):
                    for name, s in (mm or {}).get("populations", {}).items():
                        lines.append(f"| {prof} | {label} | {role} | {name} | {s['cores']} | {s['neurons']} | "
                                     f"{s['synapses']} | {s['bound_by']} |")
        lines.append("")
        for role in roles:
            for prof, m in r["mapping"][role].items():
                big = m["max_per_core"]
                kb = {k: big[k] / 1024 for k in ("memory_bytes", "synapse_bytes", "state_bytes", "axon_bytes")}
                lines.append(f"- {prof}, {role}: the fullest core holds {kb['memory_bytes']:.1f} KB "
                             f"({kb['synapse_bytes']:.1f} KB synapses, {kb['state_bytes']:.1f} KB neuron state, "
                             f"{kb['axon_bytes']:.1f} KB axon tables, at most, each on its own fullest core) and "
                             f"{big['neurons']} neurons.")
        lines.append("")
    lines += ["## Fixed point", ""]
    if "fixed_vs_float" in r:
        d = r["fixed_vs_float"]
        lines += [f"Fixed point against the float model on the same noise and draws: mean |pixel difference| "
                  f"{d['mean_abs_pixel_diff']:.4f}, max {d['max_abs_pixel_diff']:.3f} (pixels span 2).", ""]
    for role in roles:
        q = r["quantization"][role]
        lines += [f"**{role}**: host input sent as round(x * {q['input_scale']}).", "",
                  "| weight node | max abs error | rms error | largest weight | largest integer |", "|---|---:|---:|---:|---:|"]
        for name, e in q["per_layer"].items():
            if "max_abs_error" in e:
                lines.append(f"| {name} | {e['max_abs_error']:.3g} | {e['rms_error']:.3g} | {e['max_abs_weight']:.3g} | "
                             f"{int(e['max_int'])} |")
        lines += ["", "| layer | scale | threshold (integer) | threshold error | max bias error | decay error |",
                  "|---|---:|---:|---:|---:|---:|"]
        for name, e in q["per_layer"].items():
            if "scale" in e:
                vth = "-" if e["vth"] is None else int(e["vth"])
                decay = max(e.get("du_error", 0.0), e.get("dv_error", 0.0))
                lines.append(f"| {name} | {int(e['scale'])} | {vth} | {e['threshold_error']:.3g} | "
                             f"{e['max_bias_error']:.3g} | {decay:.3g} |")
        lines.append("")
    lines += ["## Profiles", ""]
    for prof in r["profiles"].values():
        lines += [f"**{prof['name']}**: {prof['title']}", "", "| quantity | value | low | high | source |",
                  "|---|---:|---:|---:|---|"]
        for key, qv in prof["quantities"].items():
            lines.append(f"| {key} | {qv['value']:g} {qv['unit']} | {qv.get('low', qv['value']):g} | "
                         f"{qv.get('high', qv['value']):g} | {qv['source']} |")
        lines.append("")
    return "\n".join(lines) + "\n"
