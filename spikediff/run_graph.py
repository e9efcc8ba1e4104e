"""``spikediff run GRAPH.nir --input X.npy``: play inputs through any compiled network, on Lava or on the
simulator, and write what came out: every Output's values per step, spikes per layer, counters.

In fixed point on Lava the run is checked against the bit-exact simulator, as ``spikediff sample`` does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .atomic import atomic_path, write_json_atomic


def simulate(dep, x: np.ndarray, device="cpu") -> dict:
    """{"outputs": {population: (N, T, *shape)} (states in float units, spikes), "spikes": {population: (N, T)}}
    from the simulator."""
    from .export.simulator import Simulator

    res = Simulator(dep, device).evaluate(x)
    outputs = {k: s.cpu().numpy() / dep.readout_scale(k) for k, s in res["states"].items()}
    outputs.update({k: s.cpu().numpy().astype(np.float64) for k, s in res["output_spikes"].items()})
    return {"outputs": outputs, "spikes": {k: c.cpu().numpy() for k, c in res["spikes"].items()}}


def run_graph(dep, x: np.ndarray, backend: str = "lava", out_dir=None, progress: bool = True, source: str = "",
              target: str = "sim") -> dict:
    """Run ``x`` ((N, T, *input shape)) through deployment ``dep``; with ``out_dir``, write ``outputs.npz``
    (one array per Output node, and ``spikes/<population>`` counts per step) and ``counters.json``."""
    from . import SpikediffError

    if backend not in ("lava", "sim"):
        raise SpikediffError(f"--backend {backend!r}: choose lava or sim")
    p = dep.plan
    if backend == "lava":
        from .runtime.build import build
        from .runtime.run import run_windows

        net = build(dep)
        res = run_windows(net, x, record_spikes=True, target=target, progress=progress)
        got = {"outputs": res["outputs"], "spikes": res["spikes"]}
        fanout = net.synapse_fanout
    else:
        got = simulate(dep, x)
        from .runtime.build import _fanout

        fanout = {}
        for f in dep.folded.synapses:
            fanout[f.syn.src] = fanout.get(f.syn.src, 0) + _fanout(f)
    n = len(x)
    summary = {"source": source, "backend": backend, "fixed_point": dep.fixed_point, "inferences": n,
               "snn_steps": dep.num_steps, "window": dep.timing.window, "period": dep.timing.period,
               "populations": {}}
    for name, pop in p.populations.items():
        if not pop.spiking:
            continue
        spikes = float(got["spikes"][name].sum()) / n
        summary["populations"][name] = {"neurons": pop.size, "latency": p.latency[name],
                                        "spikes_per_inference": spikes, "fanout": int(fanout.get(name, 0)),
                                        "synaptic_ops_per_inference": spikes * fanout.get(name, 0)}
    if dep.fixed_point and backend == "lava":
        ref = simulate(dep, x)
        exact = all(np.array_equal(ref["outputs"][k], v) for k, v in got["outputs"].items()) and all(
            np.array_equal(ref["spikes"][k], v) for k, v in got["spikes"].items())
        summary["bit_exact_vs_simulator"] = bool(exact)
    result = {"outputs_by_node": {out: got["outputs"][pop] for out, pop in p.outputs.items()}, "spikes": got["spikes"],
              "summary": summary}
    if out_dir is not None:
        out = Path(out_dir)
        if out.exists() and not out.is_dir():
            raise SpikediffError(f"output {out}: exists and is not a directory")
        out.mkdir(parents=True, exist_ok=True)
        arrays = {**result["outputs_by_node"], **{f"spikes/{k}": v for k, v in got["spikes"].items()}}
        with atomic_path(out / "outputs.npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
        result["outputs"] = out / "outputs.npz"
        result["counters"] = write_json_atomic(summary, out / "counters.json")
    return result
