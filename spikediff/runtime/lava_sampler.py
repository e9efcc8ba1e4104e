"""DDIM sampling with every denoiser evaluation on Lava's CPU simulator, the loop inside one Lava run."""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from .. import SpikediffError

_NEEDED = ("snn_steps", "time_features", "max_period", "image_shape", "readout_shape", "patch",
           "num_train_timesteps", "prediction_type")


def _metadata(graph) -> dict:
    meta = dict(graph.metadata or {})
    missing = [k for k in _NEEDED if k not in meta]
    if missing:
        raise SpikediffError(f"NIR graph: metadata lacks {missing}; sampling needs a graph written by "
                             f"`spikediff export` (or to_nir(model, schedule))")
    return meta


def sample_lava(graph, noise: np.ndarray, num_inference_steps: int, progress: bool = True) -> dict:
    """Run DDIM on Lava for each image in ``noise`` (N, C, H, W); the images one after the other.

    The noise schedule and the host-side steps come from the graph's metadata. Returns
    ``{"images": (N, C, H, W), "counters": {population: {"active", "total": (N, steps)}}, "network"}``.
    """
    from ..export.nir_to_lava import build
    from . import lava_processes as lp
    from .session import lava_session

    meta = _metadata(graph)
    noise = np.asarray(noise, dtype=np.float32)
    if noise.ndim != 4 or list(noise.shape[1:]) != [int(d) for d in meta["image_shape"]]:
        raise SpikediffError(f"noise: expected shape (N, {', '.join(map(str, meta['image_shape']))}), got {noise.shape}")
    n, steps = len(noise), int(num_inference_steps)
    net = build(graph, int(meta["snn_steps"]), dt=float(meta.get("dt", 1e-4)))
    decode = dict(image_shape=noise.shape[1:], time_dim=int(meta["time_features"]), max_period=float(meta["max_period"]),
                  readout_nir_shape=net.readout_shape, readout_perm=net.readout_perm,
                  readout_shape=tuple(int(d) for d in meta["readout_shape"]), patch=int(meta["patch"]))
    schedule = {"num_train_timesteps": int(meta["num_train_timesteps"]), "prediction_type": str(meta["prediction_type"])}
    sampler = lp.DDIMSampler(noise=noise.astype(np.float64), num_inference_steps=steps,
                             input_shape_lava=net.input_shape_lava, readout_shape_lava=net.readout.v_out.shape,
                             decode=decode, schedule=schedule, window=net.window, num_steps=net.num_steps,
                             readout_latency=net.readout_latency)
    for port in net.input_ports:
        sampler.s_out.connect(port)
    net.readout.v_out.connect(sampler.a_in)
    windows = n * steps
    counters = {}
    for name, (proc, _count) in net.populations.items():
        counters[name] = lp.SpikeCounter(shape=proc.s_out.shape, windows=windows, window=net.window,
                                         latency=net.latency[name], num_steps=net.num_steps)
        proc.s_out.connect(counters[name].s_in)

    with tqdm(total=windows, desc="lava denoising", unit="step", disable=not progress) as bar, \
            lava_session(sampler) as run:
        for _ in range(windows):
            run(net.window)  # one denoiser call per chunk: the bar moves, the loop stays inside Lava
            bar.update(1)
        images = sampler.images.get().astype(np.float32)
        counts = {name: {"active": c.active.get().reshape(n, steps), "total": c.total.get().reshape(n, steps)}
                  for name, c in counters.items()}
    return {"images": images, "counters": counts, "network": net}
