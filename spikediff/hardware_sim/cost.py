"""Energy and time per generated image: event counts (``events``) priced by a hardware profile.

Energy, per category:
- synaptic: synaptic ops x energy per op (graded host input counts as synaptic ops too; under the 45 nm
  AC/MAC convention the host input is a real-valued layer: its MACs, once per denoising step, as the
  constant current it is);
- neuron: active and inactive neuron updates x their energies;
- routing: every spike goes once to each core that holds targets of its neuron (``mapping.routes``),
  paying the within-tile energy plus one hop energy per tile east-west and north-south;
- static: static power x chips x time per image (pipelined).
Time: a Lava step lasts as long as its busiest core (updates and synaptic ops x their times, averaged
over the run) plus the spike latency of the longest route and a barrier sync, interpolated between one
tile and a full chip by the tiles used. A category a profile has no numbers for is left out and named.
"""

from __future__ import annotations

import numpy as np

PJ = 1e-12
NS = 1e-9


def estimate(ev, profile, mapping=None) -> dict:
    """Energy (J) and time (s) per image of ``ev`` (``events.Events``) on ``profile``; ``mapping`` (from
    ``mapping.map_to_cores``) is needed for routing, time and static power."""
    g = profile.get
    layers = {name: {} for name in ev.neurons}
    left_out = []
    convention = "mac_energy" in profile  # the AC/MAC convention of the SNN papers
    if "synaptic_op_energy" in profile:
        for name in ev.neurons:
            layers[name]["synaptic"] = ev.synops[name].sum() * g("synaptic_op_energy") * PJ
            if not convention:
                layers[name]["input synaptic"] = ev.input_synops[name].sum() * g("synaptic_op_energy") * PJ
    else:
        left_out.append("synaptic ops")
    if convention:
        first = [k for k in ev.neurons if ev.input_synops[k].sum() > 0] or list(ev.neurons)[:1]
        for name in first:  # the host input's MACs, split over the layers it feeds by their synaptic ops
            share = ev.input_synops[name].sum() / max(sum(ev.input_synops[k].sum() for k in first), 1e-300)
            layers[name]["input MAC"] = ev.input_macs_per_evaluation * ev.denoising_steps * share * g("mac_energy") * PJ
    if "neuron_update_energy_active" in profile:
        for name in ev.neurons:
            active = ev.active_updates[name]
            layers[name]["neuron"] = (active * g("neuron_update_energy_active")
                                      + (ev.updates(name) - active) * g("neuron_update_energy_inactive")) * PJ
    else:
        left_out.append("neuron updates")

    time = None
    if mapping is not None and "spike_energy_within_tile" in profile:
        for name, joules in _routing(ev, mapping, profile).items():
            layers[name]["routing"] = joules
    elif not convention:
        left_out.append("spike routing")
    if mapping is not None and "synaptic_op_time" in profile:
        time = _timing(ev, mapping, profile)
    else:
        left_out.append("time per image")

    by_category: dict = {}
    for parts in layers.values():
        for cat, joules in parts.items():
            by_category[cat] = by_category.get(cat, 0.0) + float(joules)
    if time is not None and "static_power" in profile:
        by_category["static"] = g("static_power") * mapping.chips * time["per_image_s"]
    elif not convention:
        left_out.append("static power")
    out = {"profile": profile.name, "title": profile.title,
           "energy_per_image_J": float(sum(by_category.values())), "by_category_J": by_category,
           "by_layer_J": {k: {c: float(j) for c, j in v.items()} for k, v in layers.items()},
           "left_out": left_out}
    if time is not None:
        out["time"] = time
    if convention:
        macs = sum(ev.ann_macs_per_evaluation.values()) * ev.denoising_steps
        out["ann_twin"] = {"macs_per_image": float(macs), "energy_per_image_J": macs * g("mac_energy") * PJ}
    return out


def _routing(ev, mapping, profile) -> dict:
    """Routing energy per source population (J per image)."""
    g = profile.get
    out = {name: 0.0 for name in ev.neurons}
    for (src, dst_core), sends in mapping.routes.items():
        if src not in ev.spikes:
            continue  # host input: arrives from outside the mesh (not modelled)
        cores = mapping.core_of[src][sends]
        spikes = ev.spikes[src][sends]
        ew, ns = mapping.hops(cores, dst_core)
        per_msg = g("spike_energy_within_tile") + ew * g("hop_energy_east_west") + ns * g("hop_energy_north_south")
        out[src] += float((spikes * per_msg).sum()) * PJ
    return out


def barrier_time(profile, tiles: int) -> float:
    """Barrier sync time (s) for ``tiles`` tiles: linear between one tile and a full chip."""
    one, full = profile.get("barrier_sync_time_one_tile", 0.0), profile.get("barrier_sync_time_full_chip", 0.0)
    per_chip = max(1, profile.get("cores_per_chip", 1) // max(1, profile.get("cores_per_tile", 1)))
    frac = (min(tiles, per_chip) - 1) / max(1, per_chip - 1)
    return (one + (full - one) * frac) * NS


def _timing(ev, mapping, profile) -> dict:
    g = profile.get
    busiest, busiest_core = 0.0, None
    for c in mapping.cores:
        idx = mapping.core_of[c.population] == c.index
        share = c.neurons / ev.neurons[c.population]
        active = ev.active_updates[c.population] * share
        inactive = ev.updates(c.population) * share - active
        synops = ev.synops[c.population][idx].sum() + ev.input_synops[c.population][idx].sum()
        t = (active * g("neuron_update_time_active") + inactive * g("neuron_update_time_inactive")
             + synops * g("synaptic_op_time")) * NS / ev.lava_steps_per_image
        if t > busiest:
            busiest, busiest_core = t, c
    longest = 0.0
    for (src, dst_core), sends in mapping.routes.items():
        if src in mapping.core_of and sends.any():
            ew, ns = mapping.hops(np.unique(mapping.core_of[src][sends]), dst_core)
            longest = max(longest, float((ew * g("hop_time_east_west", 0) + ns * g("hop_time_north_south", 0)).max()))
    spike = (g("spike_time_within_tile", 0.0) + longest) * NS
    barrier = barrier_time(profile, mapping.tiles)
    step = busiest + spike + barrier
    return {"lava_step_s": step, "busiest_core_s": busiest, "busiest_core": busiest_core.index if busiest_core else None,
            "busiest_population": busiest_core.population if busiest_core else None,
            "spike_latency_s": spike, "barrier_s": barrier,
            "per_image_s": step * ev.lava_steps_per_image, "single_image_latency_s": step * ev.lava_steps_single_image}
