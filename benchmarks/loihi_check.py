"""The cost model against a measured chip: lava-dl's PilotNet networks, measured on a one-chip Loihi 2 board in
lava-dl's benchmark notebooks, priced by spikediff's loihi2 profile from their own netx files.

Usage: python benchmarks/loihi_check.py [--lava-dl PATH] [--out benchmarks/results/loihi_check.md]

PATH is a lava-dl checkout or a bare mirror of it (default: $LAVA_DL_REPO, else /work/.mirror/lava-nc+lava-dl/repo);
the network files, lava-dl's recorded PilotNet frame and the measured figures (parsed from the notebooks'
saved outputs) are read from it at run time; nothing of lava-dl is copied into this repository.

PilotNet LIF: the netx file read with its own integers (``export.netx_read``), one inference of 16 steps run
through the bit-exact simulator and counted as the 625 inferences of the 10,000-step measurement (one frame
over and over: the events of each are the same), mapped as Lava's compiler maps it (power-of-two column
slices) and priced with the loihi2 profile at its values and bounds. Two inputs:

- as run: the notebook writes the frame with ``net.in_layer.neuron.bias = image``; Lava's LIF keeps its bias in
  ``bias_mant`` and a process has no ``bias`` variable, so that line sets a plain Python attribute and the chip
  ran with the input layer's bias at 0 (the conv layers' own biases still drive it);
- the frame: lava-dl's recorded PilotNet frame (``gts/pilotnet_lif/image.npy``) in the input layer's bias, as
  netx's hardware test writes it (``bias_mant``), the input the network was meant to see.

PilotNet SDNN: sigma-delta neurons with graded spikes are not LIF, so spikediff cannot count its events; its
structure is mapped (cores) and its measurement explained (host input bound its rate).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from _report import write_report

from spikediff.export.netx_read import read_netx, to_deployment
from spikediff.export.simulator import EventTally, Simulator
from spikediff.hardware_sim.connectivity import Connectivity
from spikediff.hardware_sim.cost import energy, estimate, neuron_work
from spikediff.hardware_sim.events import count_events
from spikediff.hardware_sim.mapping import balance, map_to_cores
from spikediff.hardware_sim.profiles import load_profile

SNN = "tutorials/lava/lib/dl/netx/pilotnet_snn"
SDNN = "tutorials/lava/lib/dl/netx/pilotnet_sdnn"
GTS = "tests/lava/lib/dl/netx/gts/pilotnet_lif"
MEASURED_STEPS = 10000  # the LIF notebook's run: num_steps = 10000, reset_interval 16


def fetch(repo: Path, rel: str, tmp: Path) -> Path:
    """A file of lava-dl: from a checkout, or out of a bare mirror with git."""
    if (repo / rel).is_file():
        return repo / rel
    got = subprocess.run(["git", "-C", str(repo), "show", f"HEAD:{rel}"], capture_output=True)
    if got.returncode or not got.stdout:
        raise SystemExit(f"lava-dl's {rel} not found in {repo} (pass --lava-dl)")
    out = tmp / rel.replace("/", "_")
    out.write_bytes(got.stdout)
    return out


def commit_of(repo: Path) -> str:
    got = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True)
    return got.stdout.strip()[:8] if got.returncode == 0 else "unknown"


def measured(notebook: Path) -> dict:
    """The figures a benchmark notebook printed, and its per-core table (cores per row, first row first)."""
    text = ""
    for cell in json.loads(notebook.read_text())["cells"]:
        for out in cell.get("outputs", []):
            text += "".join(out.get("text", [])) + "\n"

    def number(label):
        m = re.search(label + r"\s*:\s*(-?[0-9.]+)", text)
        if m is None:
            raise SystemExit(f"{notebook.name}: no '{label}' in its saved outputs")
        return float(m.group(1))

    rows = [int(m.group(1)) for m in re.finditer(r"^\|(?:\s*\d+\|){6}\s*(\d+)\|", text, re.M)]
    total = re.search(r"\| Total\s*\|\s*(\d+)\|", text)
    return {"fps": number("Throughput"), "total_power_W": number("Total Power"),
            "static_power_W": number("Static Power"), "dynamic_power_W": number("Dynamic Power"),
            "total_energy_mJ": number("Total Energy per inference"),
            "dynamic_energy_mJ": number("Dynamic Energy per inference"), "cores_per_row": rows,
            "cores": int(total.group(1)) if total else sum(rows)}


def events(dep, inferences: int):
    """One inference through the bit-exact simulator, counted as ``inferences`` identical ones in a row."""
    res = Simulator(dep).evaluate(np.zeros((1, *dep.plan.inputs[dep.plan.input])))
    tally = EventTally(dep.plan)
    for _ in range(inferences):
        tally.add(res)
    counters = {k: {"active": np.repeat(c.numpy(), inferences, 0)} for k, c in res["spikes"].items()}
    part = {**tally.to_dict(), "deployment": dep, "items": inferences, "evaluations": 1, "counters": counters}
    return count_events(part, Connectivity(dep.folded, dep.fixed)), res


def figures(ev, prof, m) -> dict:
    """Predicted energy per inference (total, dynamic), time per Lava step, with ranges."""
    c = estimate(ev, prof, m)
    steps = ev.lava_steps_per_image
    static = c["by_category_J"]["static"]
    lo, hi = c["range"]["energy_per_image_J"]
    return {"cores": len(m.cores), "chips": m.chips, "energy_mJ": c["energy_per_image_J"] * 1e3,
            "energy_range_mJ": [lo * 1e3, hi * 1e3], "dynamic_mJ": (c["energy_per_image_J"] - static) * 1e3,
            "static_mJ": static * 1e3, "step_us": c["time"]["lava_step_s"] * 1e6,
            "step_range_us": [x / steps * 1e6 for x in c["range"]["time_per_image_s"]],
            "busiest": c["time"]["busiest_population"],
            "by_category_mJ": {k: v * 1e3 for k, v in c["by_category_J"].items()},
            "sensitivity": [{"quantity": r["quantity"], "energy_mJ": [r["at_low"]["energy_J"] * 1e3,
                                                                      r["at_high"]["energy_J"] * 1e3]}
                            for r in c["sensitivity"][:5]]}


def solve(ev, prof, m, key: str, target: float, what) -> float | None:
    """The value of ``key`` (others at their values) at which ``what(cost)`` meets ``target`` (bisection over
    [value / 100, value x 100]; None outside)."""
    lo, hi = prof.get(key) / 100, prof.get(key) * 100

    def f(x):
        return what(estimate(ev, prof.with_overrides({key: x}), m)) - target

    if f(lo) > 0 or f(hi) < 0:
        return None
    for _ in range(60):
        mid = (lo * hi) ** 0.5
        lo, hi = (mid, hi) if f(mid) < 0 else (lo, mid)
    return (lo * hi) ** 0.5


def check_lif(repo: Path, tmp: Path, prof) -> dict:
    meas = measured(fetch(repo, f"{SNN}/benchmark.ipynb", tmp))
    net = read_netx(fetch(repo, f"{SNN}/network.net", tmp))
    frame = np.load(fetch(repo, f"{GTS}/image.npy", tmp))
    recorded = np.load(fetch(repo, f"{GTS}/input.npy", tmp))  # the input layer's spikes on Lava, (W, H, C, steps)
    steps = net.steps or 16
    inferences = MEASURED_STEPS // steps
    meas["step_us"] = 1e6 / (meas["fps"] * steps)
    out = {"measured": meas, "inferences_counted": inferences, "scenarios": {}}
    for name, bias in (("as run (input bias 0)", None), ("the frame (input bias = image.npy)", frame)):
        dep = to_deployment(net, input_bias=bias)
        ev, res = events(dep, inferences)
        conn = Connectivity(dep.folded, dep.fixed)
        lava = map_to_cores(dep.folded, conn, prof, "lava")
        fewest = map_to_cores(dep.folded, conn, prof)
        best, _tried = balance(dep.folded, conn, prof, neuron_work(ev, prof), fewest,
                               lambda m, ev=ev: energy(ev, prof, m))
        scen = {"firing_rate": {k: float(c.sum() / (dep.plan.populations[k].size * steps))
                                for k, c in res["spikes"].items()},
                "synaptic_ops": float(sum(s.sum() for s in ev.synops.values())),
                "lava_steps_per_inference": ev.lava_steps_per_image,
                "cores_per_layer": {c.population: 0 for c in lava.cores},
                "as_lava_maps": figures(ev, prof, lava), "fewest_cores": figures(ev, prof, fewest),
                "least_energy": figures(ev, prof, best)}
        for c in lava.cores:
            scen["cores_per_layer"][c.population] += 1
        if bias is not None:
            scen["input_layer_matches_lava"] = bool(np.array_equal(res["spikes"]["n0"][0].numpy(),
                                                                   recorded.sum(axis=(0, 1, 2))[:steps]))
        scen["needs"] = {
            "synaptic_op_time_ns": solve(ev, prof, lava, "synaptic_op_time", meas["step_us"] * 1e-6,
                                         lambda c: c["time"]["lava_step_s"]),
            "synaptic_op_energy_pJ": solve(ev, prof, lava, "synaptic_op_energy", meas["dynamic_energy_mJ"] * 1e-3,
                                           lambda c: c["energy_per_image_J"] - c["by_category_J"]["static"])}
        out["scenarios"][name] = scen
    return out


def check_sdnn(repo: Path, tmp: Path, prof) -> dict:
    meas = measured(fetch(repo, f"{SDNN}/benchmark.ipynb", tmp))
    net = read_netx(fetch(repo, f"{SDNN}/network.net", tmp))
    dep = to_deployment(net, num_steps=1, structure_only=True, skip_input_layer=True)  # netx's skip_layers=1
    m = map_to_cores(dep.folded, Connectivity(dep.folded, dep.fixed), prof, "lava")
    per = {}
    for c in m.cores:
        per[c.population] = per.get(c.population, 0) + 1
    return {"measured": meas, "neuron_types": sorted(net.neuron_types), "cores": len(m.cores), "cores_per_layer": per,
            "static_floor_mJ": meas["static_power_W"] / meas["fps"] * 1e3}


def _r(x: float, bounds) -> str:
    return f"{x:.3g} [{bounds[0]:.3g}, {bounds[1]:.3g}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lava-dl", type=Path, default=Path(os.environ.get("LAVA_DL_REPO",
                                                                        "/work/.mirror/lava-nc+lava-dl/repo")))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/loihi_check.md"))
    args = ap.parse_args()
    prof = load_profile("loihi2")
    with tempfile.TemporaryDirectory() as tmp:
        lif = check_lif(args.lava_dl, Path(tmp), prof)
        sdnn = check_sdnn(args.lava_dl, Path(tmp), prof)
    commit = commit_of(args.lava_dl)
    meas = lif["measured"]
    body = [f"lava-dl's PilotNet networks (lava-dl commit {commit}), measured on a one-chip Loihi 2 board (Oheo Gulch) "
            f"in `{SNN}/benchmark.ipynb` and `{SDNN}/benchmark.ipynb`, against spikediff's prediction from the same "
            f"netx files with the `loihi2` profile. Predictions are value [low, high]: the profile's numbers at "
            f"their values, and all at their low or all at their high bounds.", "",
            "## PilotNet LIF", "",
            f"Measured: {meas['fps']} inferences/s at 16 steps each ({meas['step_us']:.1f} µs per step), "
            f"{meas['total_power_W']} W total, {meas['static_power_W']} W static, {meas['total_energy_mJ']} mJ total "
            f"and {meas['dynamic_energy_mJ']} mJ dynamic energy per inference, {meas['cores']} cores. Predicted: one "
            f"inference of the netx file through the bit-exact simulator, counted as the {lif['inferences_counted']} "
            f"inferences of the 10,000-step run.", "",
            "| input | mapping | cores | energy / inference (mJ) | dynamic (mJ) | static (mJ) | time / step (µs) | "
            "busiest layer |", "|---|---|---:|---:|---:|---:|---:|---|",
            f"| measured | Lava | {meas['cores']} | **{meas['total_energy_mJ']:.3g}** | "
            f"{meas['dynamic_energy_mJ']:.3g} | {meas['total_energy_mJ'] - meas['dynamic_energy_mJ']:.3g} | "
            f"**{meas['step_us']:.3g}** | |"]
    for name, s in lif["scenarios"].items():
        for label, key in (("as Lava maps it", "as_lava_maps"), ("fewest cores", "fewest_cores"),
                           ("least energy", "least_energy")):
            f = s[key]
            body.append(f"| {name} | {label} | {f['cores']} | **{_r(f['energy_mJ'], f['energy_range_mJ'])}** | "
                        f"{f['dynamic_mJ']:.3g} | {f['static_mJ']:.3g} | {_r(f['step_us'], f['step_range_us'])} | "
                        f"{f['busiest']} |")
    body += ["", "Predicted over measured (as Lava maps it, at the profile's values):", "",
             "| input | energy / inference | dynamic energy | time / step | cores | firing rate, input layer -> "
             "conv 1 -> conv 2 |", "|---|---:|---:|---:|---:|---|"]
    for name, s in lif["scenarios"].items():
        f = s["as_lava_maps"]
        rates = " -> ".join(f"{s['firing_rate'][k]:.3f}" for k in ("n0", "n1", "n2"))
        body.append(f"| {name} | {f['energy_mJ'] / meas['total_energy_mJ']:.2f}x | "
                    f"{f['dynamic_mJ'] / meas['dynamic_energy_mJ']:.2f}x | {f['step_us'] / meas['step_us']:.2f}x | "
                    f"{f['cores']} / {meas['cores']} | {rates} |")
    lava_rows = list(reversed(meas["cores_per_row"]))
    s0 = next(iter(lif["scenarios"].values()))
    layers = list(s0["cores_per_layer"])
    body += ["", "Cores per layer, spikediff's Lava-like mapping against Lava's per-core table (input layer first):",
             "",
             "| layer | " + " | ".join(layers) + " |", "|---|" + "---:|" * len(layers),
             "| Lava (measured run) | " + " | ".join(str(x) for x in lava_rows) + " |",
             "| spikediff | " + " | ".join(str(s0["cores_per_layer"][k]) for k in layers) + " |", ""]
    for name, s in lif["scenarios"].items():
        n = s["needs"]
        t = f"{n['synaptic_op_time_ns']:.2f} ns" if n["synaptic_op_time_ns"] else "none in [1/100, 100] x"
        e = f"{n['synaptic_op_energy_pJ']:.1f} pJ" if n["synaptic_op_energy_pJ"] else "none in [1/100, 100] x"
        body.append(f"- {name}: the measured time per step needs synaptic_op_time = {t} (profile: "
                    f"{prof.get('synaptic_op_time')} ns, bounds {prof.quantities['synaptic_op_time'].low}-"
                    f"{prof.quantities['synaptic_op_time'].high}); the measured dynamic energy needs "
                    f"synaptic_op_energy = {e} (profile: {prof.get('synaptic_op_energy')} pJ).")
    frame = lif["scenarios"]["the frame (input bias = image.npy)"]
    body += [f"- The reader is bit-exact where lava-dl recorded Lava's spikes: the input layer's spikes per step for "
             f"the frame equal `gts/pilotnet_lif/input.npy`: "
             f"{'yes' if frame.get('input_layer_matches_lava') else 'NO'}.",
             "", "## PilotNet SDNN", "",
             f"Measured (`{SDNN}/benchmark.ipynb`): {sdnn['measured']['fps']} inferences/s (one step each; the "
             f"notebook notes the rate is bound by sending input frames to the chip), "
             f"{sdnn['measured']['total_power_W']} W total, "
             f"{sdnn['measured']['static_power_W']} W static, dynamic {sdnn['measured']['dynamic_power_W']} W (below "
             f"the board meter's resolution), {sdnn['measured']['total_energy_mJ']} mJ per inference, "
             f"{sdnn['measured']['cores']} cores.", "",
             f"- Neurons {', '.join(sdnn['neuron_types'])}: sigma-delta neurons with graded spikes, not spikediff's "
             f"LIF; their events cannot be counted here, so no energy is predicted from events.",
             f"- Cores, Lava-like mapping of the file's structure: {sdnn['cores']} against Lava's "
             f"{sdnn['measured']['cores']} (per layer: "
             + ", ".join(f"{k} {v}" for k, v in sdnn["cores_per_layer"].items())
             + f"; Lava: {', '.join(str(x) for x in reversed(sdnn['measured']['cores_per_row']))}).",
             f"- Static power alone at the measured rate gives {sdnn['static_floor_mJ']:.3g} mJ per inference, the "
             f"measured total within the meter's noise: the energy of this run is static power times a step that "
             f"host input, not the chip, makes long. spikediff's time model has no host input link, so it cannot "
             f"predict that step."]
    write_report(args.out, "Cost model against a measured Loihi 2: lava-dl's PilotNet", {"lava_dl_commit": commit,
                 "profile": prof.to_dict(), "pilotnet_lif": lif, "pilotnet_sdnn": sdnn}, body)


if __name__ == "__main__":
    main()
