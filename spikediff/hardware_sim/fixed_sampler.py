"""The whole DDIM loop in Loihi fixed point, batched, without Lava: what the Lava fixed-point run computes.

The host side (input planes, readout decoding, DDIM update) is the same numpy code the Lava sampler
process runs (``runtime.decode.Decoder``, ``diffusion.DDIMScheduler``) with the same dtypes, and the network
is ``fixed_sim.FixedNetwork`` (torch, CPU or CUDA); so images and spike counts equal the Lava run's exactly,
for thousands of images, a batch at a time.
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from .. import SpikediffError


def sample_fixed(graph, noise: np.ndarray, num_inference_steps: int, progress: bool = False, fixed=None,
                 device="cpu", batch_size: int | None = None, record: dict | None = None) -> dict:
    """DDIM in fixed point for every image of ``noise``. ``device``: "cpu", "cuda" or "auto";
    ``batch_size``: images simulated at once (default: 32 on CPU, 1024 on CUDA).

    Returns ``images`` (N, C, H, W); ``counters`` {population: {"active": (N, steps) spikes}};
    ``neuron_spikes`` {population: (neurons,) over all images and steps}; ``active_updates`` {population:
    updates of neurons with input or state, all images}; ``input_values`` (input size,): nonzero graded
    values sent; ``raster`` {population: (steps * T, k)} of the first image for the neurons in ``record``;
    ``num_steps``, ``denoising_steps``, ``fixed_point`` and ``folded``."""
    from ..diffusion.schedule import DDIMScheduler, NoiseSchedule
    from ..export.fixed_point import for_graph
    from ..export.folded import fold
    from ..export.nir_graph import read_metadata
    from ..runtime.decode import Decoder, decoder_config, host_input
    from .fixed_sim import EventTally, FixedNetwork

    if batch_size is not None and int(batch_size) < 1:
        raise SpikediffError(f"batch size must be at least 1, got {batch_size}")
    meta = read_metadata(graph)
    folded = fold(graph)
    fx = fixed if fixed is not None else for_graph(graph, folded)
    p = folded.plan
    net = FixedNetwork(folded, fx, device)
    # CPU: small batches stay in cache (measured on 2 cores: 16-32 images per batch fastest); GPU: wide
    batch_size = int(batch_size or (32 if net.device.type == "cpu" else 1024))
    decoder = Decoder(**decoder_config(meta, p.shapes[p.readout], None, "float32"))
    scheduler = DDIMScheduler(NoiseSchedule(int(meta["num_train_timesteps"]), str(meta["prediction_type"])))
    scheduler.set_timesteps(int(num_inference_steps))
    num_steps, steps = int(meta["snn_steps"]), len(scheduler.timesteps)
    noise = np.asarray(noise, dtype=np.float32)
    n = len(noise)
    spiking = [k for k in p.populations if k != p.readout]
    counts = {k: np.zeros((n, steps), np.int64) for k in spiking}
    tally = EventTally(p)
    raster = {k: [] for k in (record or {})}
    images = np.zeros_like(noise)
    scale = num_steps * fx.readout_scale(p.readout)
    with tqdm(total=n * steps, desc=f"fixed-point sim ({net.device.type})", unit="image-step",
              disable=not progress) as bar:
        for start in range(0, n, int(batch_size)):
            x = noise[start:start + batch_size].astype(np.float64)
            for step, t in enumerate(scheduler.timesteps):
                res = net.evaluate(host_input(x, int(t), decoder.time_dim, decoder.max_period), num_steps,
                                   record=record if start == 0 else None)
                for k in spiking:
                    counts[k][start:start + len(x), step] = res["spikes"][k].sum(1).cpu().numpy()
                tally.add(res)
                for k in raster if start == 0 else ():
                    raster[k].append(res["raster"][k].cpu().numpy())
                mean = res["readout_int"].sum(1).cpu().numpy().astype(np.float64) / scale
                x, _ = scheduler.step(decoder.output_nir(mean), int(t), x)
                bar.update(len(x))
            images[start:start + len(x)] = x.clip(-1, 1)
    return {"images": images, "counters": {k: {"active": c} for k, c in counts.items()}, **tally.to_dict(),
            "num_steps": num_steps,
            "denoising_steps": steps, "raster": {k: np.concatenate(r) for k, r in raster.items()},
            "fixed_point": fx, "folded": folded}


def same_as_lava(sim: dict, lava: dict) -> bool:
    """Whether a Lava fixed-point run (``sample_lava``) gave exactly the simulator's images and spike counts."""
    return bool(np.array_equal(sim["images"], lava["images"]) and all(
        np.array_equal(sim["counters"][k]["active"], c["active"]) for k, c in lava["counters"].items()))
