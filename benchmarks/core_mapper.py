"""The core mapper on a shipped model: its time per chip profile, with and without the shortcuts that skip work.

The mapper (spikediff/hardware_sim/mapping.py) cuts each population into cores by asking the cost of many candidate
runs of neurons, and re-maps when a core is over its routing limits; the least-energy mapping does it again at
several core budgets. Three shortcuts skip work without changing the answer: a run whose cost, bounded from below
without convolutions, is already over the core's limits is refused at once; a population whose cap and sources'
cuts are unchanged since an earlier attempt or budget keeps its cut; and so do the routes between two populations
cut as before. This times the fewest-cores and the least-energy mappings (``mapping.balance``, as ``spikediff
report`` runs them) of one compiled network with the shortcuts and with them switched off, and checks that both
give the same cores and routes.

Usage: python benchmarks/core_mapper.py --model mnist --out benchmarks/results/core_mapper.md
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from pathlib import Path

import torch
from _report import write_report

from spikediff.checkpoint import load_model, resolve
from spikediff.export.deployment import compile_sampler
from spikediff.export.nir_graph import sampler_graphs
from spikediff.hardware_sim import mapping
from spikediff.hardware_sim.connectivity import Connectivity
from spikediff.hardware_sim.cost import energy, neuron_work
from spikediff.hardware_sim.events import count_events
from spikediff.hardware_sim.profiles import load_profile
from spikediff.hardware_sim.sampler import sample_sim


@contextlib.contextmanager
def without_shortcuts():
    """Every candidate run priced exactly (a lower bound of nothing refuses none), every population cut and every
    route asked afresh. The cost of a run already priced is still looked up, not priced again."""
    cost, reads, feeds = mapping._PopulationCost._cost, mapping._PopulationCost.reads, mapping._feeds
    nothing = {"memory_bytes": 0, "fan_in_axons": 0}
    mapping._PopulationCost._cost = lambda self, idx, run, exact: cost(self, idx, run, True) if exact else nothing
    mapping._PopulationCost.reads = staticmethod(lambda *a: object())  # never equal to an earlier one
    mapping._feeds = lambda f, conn, core_of, sizes, kept: feeds(f, conn, core_of, sizes, {})
    try:
        yield
    finally:
        mapping._PopulationCost._cost, mapping._PopulationCost.reads, mapping._feeds = cost, staticmethod(reads), feeds


def described(m) -> tuple:
    return ([(c.population, c.neurons, c.synapses, c.memory_bytes, c.fan_in_axons, c.fan_out_axons) for c in m.cores],
            [(k, v.whole.tolist(), {c: i.tolist() for c, i in v.part.items()}) for k, v in m.routes.items()])


def map_both(dep, conn, ev, prof) -> tuple:
    """(seconds fewest, seconds least energy, cores of each, their description)."""
    t0 = time.perf_counter()
    few = mapping.map_to_cores(dep.folded, conn, prof)
    t1 = time.perf_counter()
    best, _tried = mapping.balance(dep.folded, conn, prof, neuron_work(ev, prof), few,
                                   lambda mp: energy(ev, prof, mp, None))
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, (len(few.cores), len(best.cores)), (described(few), described(best))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mnist", help="shipped model name or checkpoint (default: mnist, the U-Net)")
    ap.add_argument("--profiles", nargs="+", default=["loihi1", "loihi2"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/core_mapper.md"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, schedule, _ = load_model(resolve(args.model))
    sd = compile_sampler(sampler_graphs(model, schedule, compact=True), fixed_point=True)
    part = sample_sim(sd, 2, 5, seed=0, progress=False)["parts"]["denoiser"]  # firing rates for the work per neuron
    dep = part["deployment"]
    conn = Connectivity(dep.folded, dep.fixed)
    ev = count_events(part, conn)
    rows, equal = {}, True
    for name in args.profiles:
        prof = load_profile(name)
        fast = map_both(dep, conn, ev, prof)
        with without_shortcuts():
            slow = map_both(dep, conn, ev, prof)
        same = fast[3] == slow[3]
        equal &= same
        rows[name] = {"cores": {"fewest": fast[2][0], "least_energy": fast[2][1]}, "same_mapping": same,
                      "seconds": {"fewest": fast[0], "least_energy": fast[1]},
                      "seconds_without_shortcuts": {"fewest": slow[0], "least_energy": slow[1]}}
    neurons = sum(pop.size for pop in dep.plan.populations.values())
    load = os.getloadavg()[0]
    payload = {"model": args.model, "neurons": neurons, "threads": args.threads, "profiles": rows,
               "same_mapping": equal, "load_average_1min_at_end": load}
    body = [f"`{args.model}` ({neurons:,} neurons), compiled in compact fixed point; work per neuron from 2 images x 5 "
            f"DDIM steps on the simulator; {args.threads} thread(s). Each mapping as `spikediff report` makes it: "
            f"the fewest cores, then the least-energy search over core budgets. With and without the mapper's "
            f"shortcuts, the same cores and routes: **{equal}**. Load average at the end: {load:.1f} (2 means the two "
            f"cores were busy: the timings are then those of a shared core).", "",
            "| profile | mapping | cores | s | s without shortcuts | speed-up |", "|---|---|---:|---:|---:|---:|"]
    for name, r in rows.items():
        for key, label in (("fewest", "fewest cores"), ("least_energy", "least energy (search)")):
            fast, slow = r["seconds"][key], r["seconds_without_shortcuts"][key]
            body.append(f"| {name} | {label} | {r['cores'][key]} | {fast:.1f} | {slow:.1f} | {slow / fast:.1f}x |")
    write_report(args.out, "The core mapper", payload, body)


if __name__ == "__main__":
    main()
