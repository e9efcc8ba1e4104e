"""A sampler's whole loop in Loihi fixed point, batched, without Lava: what its fixed-point Lava runs compute.

The host side is the kind's ``HostProgram`` (``diffusion.kinds``), the same numpy code the Lava ``HostLoop``
process runs with the same dtypes, and the networks are ``simulator.Simulator`` (torch, CPU or CUDA); so
images, tokens and spike counts equal the Lava run's exactly, for thousands of images, a batch at a time.
One loop for every kind of sampler.
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from .. import SpikediffError


def sample_sim(sd, n: int, steps: int, seed: int = 0, first: int = 0, device="cpu", batch_size: int | None = None,
               progress: bool = False, record: dict | None = None, **options) -> dict:
    """Sample ``n`` images with a compiled fixed-point sampler (``export.deployment.SamplerDeployment``).
    ``device``: "cpu", "cuda" or "auto"; ``batch_size``: images simulated at once (default: 32 on CPU, 1024 on
    CUDA); ``record``: {population of the loop network: flat neuron indices} whose spikes of image 0 are
    kept per step (a raster).

    Returns ``images`` (n, C, H, W), the program's ``extras`` (e.g. ``tokens``), ``counters`` {population:
    {"active": (n, steps)}} of the loop network, ``final_counters`` {population: (n,)}, ``raster``, and
    ``parts``: {role: that network's events in the form ``events.count_events`` prices}."""
    from ..export.simulator import EventTally, Simulator

    if not sd.fixed_point:
        raise SpikediffError("the bit-exact simulator runs fixed-point samplers (compile with fixed_point=True)")
    if batch_size is not None and int(batch_size) < 1:
        raise SpikediffError(f"batch size must be at least 1, got {batch_size}")
    if int(n) < 1:
        raise SpikediffError(f"number of images must be at least 1, got {n}")
    program = sd.program(n, steps, seed=seed, first=first, **options)
    loop = Simulator(sd.loop, device)
    final = Simulator(sd.networks[program.final], device) if program.final else None
    batch_size = int(batch_size or (32 if loop.device.type == "cpu" else 1024))
    p = sd.loop.plan
    t = sd.loop.num_steps
    scale = t * sd.loop.readout_scale()
    readout_shape = p.shapes[p.readout]
    spiking = [k for k, pop in p.populations.items() if pop.spiking]
    counts = {k: np.zeros((n, program.steps), np.int64) for k in spiking}
    tallies = {"denoiser": EventTally(p)}
    final_counts = {}
    if final is not None:
        fp = final.plan
        tallies[program.final] = EventTally(fp)
        final_counts = {k: np.zeros(n, np.int64) for k, pop in fp.populations.items() if pop.spiking}
    raster = {k: [] for k in (record or {})}
    state = np.zeros((n, *program.state_shape))
    images = None
    with tqdm(total=n * (program.steps + (1 if final else 0)), desc=f"fixed-point sim ({loop.device.type})",
              unit="image-step", disable=not progress) as bar:
        for start in range(0, n, batch_size):
            index = np.arange(start, min(start + batch_size, n))
            part = program.start(index)
            for step in range(program.steps):
                res = loop.evaluate(program.inputs(part, index, step), record=record if start == 0 else None)
                _check_sum(res, "the loop network")
                for k in spiking:
                    counts[k][index, step] = res["spikes"][k].sum(1).cpu().numpy()
                tallies["denoiser"].add(res)
                for k in raster if start == 0 else ():
                    raster[k].append(res["raster"][k].cpu().numpy())
                mean = res["readout_int"].sum(1).cpu().numpy().astype(np.float64) / scale
                program.update(part, index, step, mean.reshape(len(index), *readout_shape))
                bar.update(len(index))
            final_readout = None
            if final is not None:
                res = final.evaluate(program.final_inputs(part, index))
                _check_sum(res, f"the {program.final}")
                tallies[program.final].add(res)
                for k in final_counts:
                    final_counts[k][index] = res["spikes"][k].sum(1).cpu().numpy()
                final_readout = res["readout_int"].cpu().numpy() / sd.networks[program.final].readout_scale()
                bar.update(len(index))
            got = program.images(part, final_readout)
            if images is None:
                images = np.zeros((n, *got.shape[1:]), np.float32)
            images[index] = got
            state[index] = part
    counters = {k: {"active": c} for k, c in counts.items()}
    parts = {"denoiser": {**tallies["denoiser"].to_dict(), "deployment": sd.loop, "items": n,
                          "evaluations": program.steps, "counters": counters}}
    if final is not None:
        parts[program.final] = {**tallies[program.final].to_dict(), "deployment": sd.networks[program.final],
                                "items": n, "evaluations": 1,
                                "counters": {k: {"active": c[:, None]} for k, c in final_counts.items()}}
    return {"images": images, **program.extras(state), "counters": counters, "final_counters": final_counts,
            "raster": {k: np.concatenate(r) for k, r in raster.items()}, "parts": parts, "program": program}


def _check_sum(res: dict, what: str) -> None:
    """The hardware form's readout sums its state over T in Loihi's 24-bit voltage, below its threshold."""
    from ..export.quantize import VTH_MAX

    for name, peak in res["readout_sum_peak"].items():
        if peak >= VTH_MAX << 6:
            raise SpikediffError(f"readout {name!r} of {what}: its sum over the T steps ({peak:.0f}) reaches Loihi's "
                                 f"24-bit voltage, which the hardware form's summing readout cannot hold (build the "
                                 f"plain form: runtime.build.build(..., hardware=False))")


def same_as_lava(sim: dict, lava: dict) -> bool:
    """Whether a fixed-point Lava run (``runtime.run.sample_lava``) gave exactly the simulator's images, extra
    results (tokens) and spike counts of every network."""
    same = np.array_equal(sim["images"], lava["images"])
    same &= all(np.array_equal(sim[k], lava[k]) for k in ("tokens", "latents") if k in sim and k in lava)
    same &= all(np.array_equal(sim["counters"][k]["active"], c["active"]) for k, c in lava["counters"].items())
    same &= all(np.array_equal(sim["final_counters"][k], c) for k, c in lava["final_counters"].items())
    return bool(same)
