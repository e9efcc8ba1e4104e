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
    from ..export.nir_to_lava import from_lava_layout, population_perms, to_lava_layout
    from ..runtime.decode import Decoder
    from .fixed_sim import evaluate

    meta = dict(graph.metadata or {})
    folded = fold(graph, float(meta.get("dt", 1e-4)))
    fx = fixed if fixed is not None else for_graph(graph, folded)
    p = folded.plan
    noise = np.asarray(noise, dtype=np.float32)
    readout_shape = p.shapes[p.readout]
    perm = population_perms(folded)[p.readout]  # the readout's Lava order, as the builder chooses it
    decoder = Decoder(image_shape=noise.shape[1:], time_dim=int(meta["time_features"]),
                      max_period=float(meta["max_period"]), readout_nir_shape=readout_shape, readout_perm=perm,
                      readout_shape=tuple(int(d) for d in meta["readout_shape"]), patch=int(meta["patch"]))
    scheduler = DDIMScheduler(NoiseSchedule(int(meta["num_train_timesteps"]), str(meta["prediction_type"])))
    scheduler.set_timesteps(int(num_inference_steps))
    num_steps = int(meta["snn_steps"])
    x = noise.astype(np.float64)
    n = len(x)
    counts = {k: np.zeros((n, len(scheduler.timesteps))) for k in p.populations if k != p.readout}
    input_shape = p.shapes[p.input]
    for step, t in enumerate(tqdm(scheduler.timesteps, desc="fixed-point sim", disable=not progress)):
        inputs = np.stack([from_lava_layout(decoder.input(x[i], int(t)), input_shape) for i in range(n)])
        res = evaluate(folded, fx, inputs, num_steps)
        for k in counts:
            counts[k][:, step] = res["spikes"][k].sum(1)
        acc = res["readout_int"].sum(1).astype(np.float64)  # (N, *readout shape), exact
        for i in range(n):
            mean = to_lava_layout(acc[i], readout_shape, perm) / (num_steps * fx.readout_scale(p.readout))
            x[i], _ = scheduler.step(decoder.output(mean), int(t), x[i])
    return {"images": x.clip(-1, 1).astype(np.float32), "counters": {k: {"active": c} for k, c in counts.items()},
            "fixed_point": fx}

