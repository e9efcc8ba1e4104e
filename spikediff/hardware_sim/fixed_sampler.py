"""The whole DDIM loop in Loihi fixed point, batched, without Lava: what the Lava fixed-point run computes.

The host side (input planes, readout decoding, DDIM update) is the same code the Lava sampler process
runs (``runtime.decode.Decoder``, ``diffusion.DDIMScheduler``) with the same dtypes, and the network is
``fixed_sim.evaluate``; so images and spike counts equal the Lava run's exactly, for all images at once.
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm


def sample_fixed(graph, noise: np.ndarray, num_inference_steps: int, progress: bool = False, fixed=None) -> dict:
    """``{"images": (N, C, H, W), "counters": {population: {"active": (N, steps)}}, "fixed_point"}``."""
    from ..diffusion.schedule import DDIMScheduler, NoiseSchedule
    from ..export.fixed_point import for_graph
    from ..export.folded import fold
    from ..export.nir_graph import read_metadata
    from ..runtime.decode import Decoder, decoder_config, host_input
    from .fixed_sim import evaluate

    meta = read_metadata(graph)
    folded = fold(graph)
    fx = fixed if fixed is not None else for_graph(graph, folded)
    p = folded.plan
    decoder = Decoder(**decoder_config(meta, p.shapes[p.readout], None, "float32"))
    scheduler = DDIMScheduler(NoiseSchedule(int(meta["num_train_timesteps"]), str(meta["prediction_type"])))
    scheduler.set_timesteps(int(num_inference_steps))
    num_steps = int(meta["snn_steps"])
    x = np.asarray(noise, dtype=np.float32).astype(np.float64)
    counts = {k: np.zeros((len(x), len(scheduler.timesteps))) for k in p.populations if k != p.readout}
    for step, t in enumerate(tqdm(scheduler.timesteps, desc="fixed-point sim", disable=not progress)):
        res = evaluate(folded, fx, host_input(x, int(t), decoder.time_dim, decoder.max_period), num_steps)
        for k in counts:
            counts[k][:, step] = res["spikes"][k].sum(1)
        mean = res["readout_int"].sum(1).astype(np.float64) / (num_steps * fx.readout_scale(p.readout))
        x, _ = scheduler.step(decoder.output_nir(mean), int(t), x)
    return {"images": x.clip(-1, 1).astype(np.float32), "counters": {k: {"active": c} for k, c in counts.items()},
            "fixed_point": fx}


def same_as_lava(sim: dict, lava: dict) -> bool:
    """Whether a Lava fixed-point run (``sample_lava``) gave exactly the simulator's images and spike counts."""
    return bool(np.array_equal(sim["images"], lava["images"]) and all(
        np.array_equal(sim["counters"][k]["active"], c["active"]) for k, c in lava["counters"].items()))
