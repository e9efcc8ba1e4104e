"""Energy and time per generated image: event counts (``events``) priced by a hardware profile.

The events and the mapping are counted once (``Tally``: prices left out); pricing is then a sum of counts
times the profile's numbers, so every total is also given at the profile's low and high bounds and for each
quantity at its bounds alone (the sensitivity table).

Energy, per category:
- synaptic: synaptic ops of binary spikes x energy per op;
- input synaptic: synaptic ops of the graded host input (24-bit payloads) x ``graded_synaptic_op_energy``
  (a profile without it prices them as binary ops); under the 45 nm AC/MAC convention the host input is a
  real-valued layer instead ("input MAC": its MACs, once per denoising step, as the constant current it is);
- input messages: nonzero host values sent (one message per value per SNN step) x ``input_message_energy``;
- neuron: active and inactive neuron updates x their energies;
- routing: every spike goes once to each core that holds targets of its neuron (``mapping.routes``),
  paying the within-tile energy plus one hop energy per tile east-west and north-south;
- chip-to-chip: such a message that crosses chips pays ``chip_to_chip_energy`` per chip boundary;
- static: static power x chips x time per image.
Time: a Lava step lasts as long as its busiest core (updates and synaptic ops x their times, averaged over the
run) plus the spike latency of the longest route (tiles, hops and chip crossings) and a barrier sync: within
a chip interpolated between one tile and a full chip by the tiles used, across chips 2 x (chips - 1) chip
crossings (the sync message out to the farthest chip of a row and back).

Two ways of running: pipelined (images in flight together, the Lava steps per image of the whole run) and a
single image alone (its latency: more Lava steps, each as long as a pipelined one, since the busiest core works
at its pipelined rate while the image passes it, and each neuron updated at every one of them). A category a
profile has no numbers for is left out and named. The mapping is held fixed while prices move to their bounds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PJ = 1e-12
NS = 1e-9


@dataclass
class Tally:
    """What one network's events and mapping give, before any price (per image)."""

    layers: dict  # population -> {"neurons", "synops", "graded", "active"}
    steps: float  # Lava steps per image, pipelined
    steps_single: float  # Lava steps of one image alone
    input_share: dict  # population -> its share of the host input (by graded synaptic ops)
    input_messages: float
    input_macs: float  # dense MACs of the host input synapses per image (AC/MAC convention)
    ann_macs: float
    routes: dict | None  # source population -> (spikes x [1, east-west hops, north-south hops, chips crossed])
    cores: np.ndarray | None  # (cores, 4): neurons, active updates, synaptic ops (binary + graded), population index
    core_populations: list | None
    latency_rows: np.ndarray | None  # (routes, 3): east-west hops, north-south hops, chips crossed
    chips: int  # chips the network spans (its barrier and routes)
    tiles: int
    powered: int  # chips drawing static power while it runs (with other networks resident: all of theirs)


def tally(ev, mapping=None, powered_chips: int | None = None) -> Tally:
    """Count what the prices multiply: per layer, per core and per route. ``powered_chips``: the chips powered
    while this network runs (default: its own)."""
    layers = {name: {"neurons": float(ev.neurons[name]), "synops": float(ev.synops[name].sum()),
                     "graded": float(ev.input_synops[name].sum()), "active": float(ev.active_updates[name])}
              for name in ev.neurons}
    fed = {k: v["graded"] for k, v in layers.items() if v["graded"] > 0}
    if not fed:
        fed = {next(iter(layers)): 1.0}
    share = {k: v / sum(fed.values()) for k, v in fed.items()}
    routes = cores = pops = rows = None
    chips = tiles = 0
    if mapping is not None:
        routes = {name: np.zeros(4) for name in ev.neurons}
        latency = set()
        per_core = {src: np.bincount(mapping.core_of[src], weights=ev.spikes[src], minlength=len(mapping.cores))
                    for src in ev.spikes if src in mapping.core_of}
        for (src, dst_core), route in mapping.routes.items():
            if src not in per_core:
                continue
            src_cores, spikes = route.sums(ev.spikes[src], per_core[src])
            if not len(src_cores):
                continue
            ew, ns = mapping.hops(src_cores, dst_core)
            cross = mapping.chip_hops(src_cores, dst_core)
            routes[src] += [spikes.sum(), (spikes * ew).sum(), (spikes * ns).sum(), (spikes * cross).sum()]
            latency |= set(zip(np.atleast_1d(ew).tolist(), np.atleast_1d(ns).tolist(), np.atleast_1d(cross).tolist(),
                               strict=True))
        rows = np.array(sorted(latency), dtype=np.float64).reshape(-1, 3)
        pops = list(ev.neurons)
        cores = np.zeros((len(mapping.cores), 4))
        for i, c in enumerate(mapping.cores):
            idx = mapping.core_of[c.population] == c.index
            share_c = c.neurons / ev.neurons[c.population]
            cores[i] = [c.neurons, ev.active_updates[c.population] * share_c,
                        ev.synops[c.population][idx].sum() + ev.input_synops[c.population][idx].sum(),
                        pops.index(c.population)]
        chips, tiles = mapping.chips, mapping.tiles_per_chip_used
    return Tally(layers, float(ev.lava_steps_per_image), float(ev.lava_steps_single_image), share,
                 float(getattr(ev, "input_messages", 0.0)), float(ev.input_macs_per_evaluation * ev.denoising_steps),
                 float(sum(ev.ann_macs_per_evaluation.values()) * ev.denoising_steps), routes, cores, pops, rows,
                 chips, tiles, int(powered_chips or chips))


def barrier_time(profile, tiles: int, chips: int = 1, values: dict | None = None) -> float:
    """Barrier sync time (s): within a chip linear between one tile and a full chip by the tiles used; across
    ``chips`` chips in a row, 2 x (chips - 1) chip crossings more."""
    v = profile.values() if values is None else values
    one, full = v.get("barrier_sync_time_one_tile", 0.0), v.get("barrier_sync_time_full_chip", 0.0)
    per_chip = max(1, profile.get("cores_per_chip", 1) // max(1, profile.get("cores_per_tile", 1)))
    frac = (min(tiles, per_chip) - 1) / max(1, per_chip - 1)
    return (one + (full - one) * frac + 2 * max(0, chips - 1) * v.get("chip_to_chip_time", 0.0)) * NS


def _price(t: Tally, v: dict, profile, convention: bool) -> dict:
    """Energy (J) by layer and category and time (s) of a tally at the numbers ``v``, pipelined and alone."""
    layers = {name: {} for name in t.layers}
    single_extra = 0.0  # neuron energy one image alone adds (inactive updates of the longer run)
    if "synaptic_op_energy" in v:
        graded = v.get("graded_synaptic_op_energy", v["synaptic_op_energy"])
        for name, L in t.layers.items():
            layers[name]["synaptic"] = L["synops"] * v["synaptic_op_energy"] * PJ
            if not convention:
                layers[name]["input synaptic"] = L["graded"] * graded * PJ
    if convention:
        for name, s in t.input_share.items():
            layers[name]["input MAC"] = t.input_macs * s * v["mac_energy"] * PJ
    if "input_message_energy" in v:
        for name, s in t.input_share.items():
            layers[name]["input messages"] = t.input_messages * s * v["input_message_energy"] * PJ
    if "neuron_update_energy_active" in v:
        e_a, e_i = v["neuron_update_energy_active"], v["neuron_update_energy_inactive"]
        for name, L in t.layers.items():
            layers[name]["neuron"] = (L["active"] * e_a + (L["neurons"] * t.steps - L["active"]) * e_i) * PJ
            single_extra += L["neurons"] * (t.steps_single - t.steps) * e_i * PJ
    if t.routes is not None and "spike_energy_within_tile" in v:
        unit = np.array([v["spike_energy_within_tile"], v.get("hop_energy_east_west", 0.0),
                         v.get("hop_energy_north_south", 0.0)])
        for name, r in t.routes.items():
            layers[name]["routing"] = float(r[:3] @ unit) * PJ
            if "chip_to_chip_energy" in v:
                layers[name]["chip-to-chip"] = float(r[3]) * v["chip_to_chip_energy"] * PJ
    by_category: dict = {}
    for parts in layers.values():
        for cat, joules in parts.items():
            by_category[cat] = by_category.get(cat, 0.0) + float(joules)
    out = {"by_layer_J": layers, "by_category_J": by_category}
    if t.cores is not None and "synaptic_op_time" in v:
        neurons, active, synops = t.cores[:, 0], t.cores[:, 1], t.cores[:, 2]
        idle = neurons * t.steps - active
        work = (active * v["neuron_update_time_active"] + idle * v["neuron_update_time_inactive"]
                + synops * v["synaptic_op_time"]) * NS / t.steps
        busiest = int(np.argmax(work)) if len(work) else None
        hop = np.array([v.get("hop_time_east_west", 0.0), v.get("hop_time_north_south", 0.0),
                        v.get("chip_to_chip_time", 0.0)])
        longest = float((t.latency_rows @ hop).max()) if len(t.latency_rows) else 0.0
        spike = (v.get("spike_time_within_tile", 0.0) + longest) * NS
        barrier = barrier_time(profile, t.tiles, t.chips, v)
        step = (float(work[busiest]) if busiest is not None else 0.0) + spike + barrier
        population = t.core_populations[int(t.cores[busiest, 3])] if busiest is not None else None
        out["time"] = {"lava_step_s": step, "busiest_core_s": float(work[busiest]) if busiest is not None else 0.0,
                       "busiest_core": busiest, "busiest_population": population,
                       "spike_latency_s": spike, "barrier_s": barrier, "per_image_s": step * t.steps,
                       "single_image_latency_s": step * t.steps_single}
        if "static_power" in v:
            by_category["static"] = v["static_power"] * t.powered * out["time"]["per_image_s"]
    total = float(sum(by_category.values()))
    out["energy_per_image_J"] = total
    if "time" in out:
        static_single = v.get("static_power", 0.0) * t.powered * out["time"]["single_image_latency_s"]
        out["single_image_J"] = total - by_category.get("static", 0.0) + single_extra + static_single
    return out


def estimate(ev, profile, mapping=None, powered_chips: int | None = None) -> dict:
    """Energy (J) and time (s) per image of ``ev`` (``events.Events``) on ``profile``; ``mapping`` (from
    ``mapping.map_to_cores``) is needed for routing, time and static power. Every total also at the profile's
    low and high bounds (``range``), for one image alone (``single_image``), and per uncertain quantity at its
    bounds with the others at their values (``sensitivity``, largest swing first). ``powered_chips``: chips
    drawing static power while the network runs, when other networks share them (default: the mapping's)."""
    convention = "mac_energy" in profile  # the AC/MAC convention of the SNN papers
    t = tally(ev, mapping, powered_chips)
    at = {k: profile.values(k) for k in ("value", "low", "high")}
    base = _price(t, at["value"], profile, convention)
    low, high = _price(t, at["low"], profile, convention), _price(t, at["high"], profile, convention)
    left_out = []
    if "synaptic_op_energy" not in profile:
        left_out.append("synaptic ops")
    if "neuron_update_energy_active" not in profile:
        left_out.append("neuron updates")
    if not (mapping is not None and "spike_energy_within_tile" in profile) and not convention:
        left_out.append("spike routing")
    if "time" not in base:
        left_out.append("time per image")
    if "static" not in base["by_category_J"] and not convention:
        left_out.append("static power")
    notes = []
    if not convention and "synaptic_op_energy" in profile and "graded_synaptic_op_energy" not in profile \
            and t.input_messages:
        notes.append("graded host input priced as binary synaptic ops (no graded_synaptic_op_energy)")
    out = {"profile": profile.name, "title": profile.title, "energy_per_image_J": base["energy_per_image_J"],
           "by_category_J": base["by_category_J"],
           "by_layer_J": {k: {c: float(j) for c, j in v.items()} for k, v in base["by_layer_J"].items()},
           "left_out": left_out, "notes": notes,
           "range": {"energy_per_image_J": [low["energy_per_image_J"], high["energy_per_image_J"]]}}
    if "time" in base:
        out["time"] = base["time"]
        out["range"]["time_per_image_s"] = [low["time"]["per_image_s"], high["time"]["per_image_s"]]
        out["single_image"] = {"energy_J": base["single_image_J"], "time_s": base["time"]["single_image_latency_s"],
                               "energy_range_J": [low["single_image_J"], high["single_image_J"]],
                               "time_range_s": [low["time"]["single_image_latency_s"],
                                                high["time"]["single_image_latency_s"]]}
    out["sensitivity"] = sensitivity(t, profile, convention, base)
    if convention:
        out["ann_twin"] = {"macs_per_image": t.ann_macs,
                           "energy_per_image_J": t.ann_macs * profile.get("mac_energy") * PJ}
    return out


def sensitivity(t: Tally, profile, convention: bool, base: dict) -> list:
    """Per uncertain quantity: energy and time per image with it at its low and its high bound, the others at
    their values; the largest energy swing first."""
    rows = []
    values = profile.values()
    for key in profile.uncertain():
        q = profile.quantities[key]
        ends = {}
        for bound in ("low", "high"):
            got = _price(t, {**values, key: getattr(q, bound)}, profile, convention)
            ends[f"at_{bound}"] = {"energy_J": got["energy_per_image_J"],
                                   "time_s": got["time"]["per_image_s"] if "time" in got else None}
        swing = abs(ends["at_high"]["energy_J"] - ends["at_low"]["energy_J"])
        rows.append({"quantity": key, "unit": q.unit, "value": q.value, "low": q.low, "high": q.high, **ends,
                     "energy_swing_J": swing})
    return sorted(rows, key=lambda r: -r["energy_swing_J"])


def neuron_work(ev, profile) -> dict:
    """Per population, each neuron's serial work per image on its core (ns): its synaptic ops plus its share
    of the population's neuron updates, at the profile's times (what a balanced mapping evens out)."""
    g = profile.get
    out = {}
    for name, n in ev.neurons.items():
        active = ev.active_updates[name] / n
        updates = active * g("neuron_update_time_active", 0.0) + (ev.lava_steps_per_image - active) * g(
            "neuron_update_time_inactive", 0.0)
        out[name] = (ev.synops[name] + ev.input_synops[name]) * g("synaptic_op_time", 0.0) + updates
    return out


def energy(ev, profile, mapping, powered_chips: int | None = None) -> float:
    """Energy per image (J, pipelined) at the profile's values: the quick price a mapping search compares."""
    t = tally(ev, mapping, powered_chips)
    return _price(t, profile.values(), profile, "mac_energy" in profile)["energy_per_image_J"]
