"""DDIM sampling with every denoiser evaluation on Lava's CPU simulator, the loop inside one Lava run."""

from __future__ import annotations

import warnings

import numpy as np
from tqdm.auto import tqdm

from .. import SpikediffError


def _metadata(graph) -> dict:
    meta = dict(graph.metadata or {})
    missing = [k for k in ("snn_steps", "time_features", "max_period", "readout_shape", "patch") if k not in meta]
    if missing:
        raise SpikediffError(f"NIR graph: metadata lacks {missing}; sampling needs a graph written by spikediff export")
    return meta


def sample_lava(graph, noise: np.ndarray, timesteps: np.ndarray, schedule: dict, progress: bool = True) -> dict:
    """Run DDIM on Lava for each image in ``noise`` (N, C, H, W); the images one after the other.

    ``schedule`` is ``{"num_train_timesteps", "prediction_type"}``. Returns ``{"images": (N, C, H, W),
    "counters": {...}}`` with spike counts per population and per denoising step.
    """
    from .. import lava_compat

    lava_compat.import_lava()
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg

    from ..export.nir_to_lava import build
    from . import lava_processes as lp

    meta = _metadata(graph)
    noise = np.asarray(noise, dtype=np.float32)
    n, steps = len(noise), len(timesteps)
    net = build(graph, int(meta["snn_steps"]), dt=float(meta.get("dt", 1e-4)))
    decode = dict(image_shape=noise.shape[1:], time_dim=int(meta["time_features"]), max_period=float(meta["max_period"]),
                  readout_shape=tuple(int(d) for d in meta["readout_shape"]), patch=int(meta["patch"]),
                  readout_perm=net.readout_perm)
    sampler = lp.DDIMSampler(noise=noise.astype(np.float64), timesteps=np.asarray(timesteps), input_shape_lava=net.input_shape_lava,
                             readout_shape_lava=net.readout.v_out.shape, decode=decode, schedule=dict(schedule),
                             window=net.window, num_steps=net.num_steps, readout_latency=net.readout_latency)
    for port in net.input_ports:
        sampler.s_out.connect(port)
    net.readout.v_out.connect(sampler.a_in)
    windows = n * steps
    counters = {}
    for name, (proc, _count) in net.populations.items():
        counters[name] = lp.SpikeCounter(shape=proc.s_out.shape, windows=windows, window=net.window,
                                         latency=net.latency[name], num_steps=net.num_steps)
        proc.s_out.connect(counters[name].s_in)

    bar = tqdm(total=windows, desc="lava denoising", unit="step", disable=not progress)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Cannot import module", category=UserWarning)
            for _ in range(windows):
                sampler.run(condition=RunSteps(num_steps=net.window), run_cfg=Loihi2SimCfg(select_tag="floating_pt"))
                bar.update(1)
        images = sampler.images.get().astype(np.float32)
        counts = {name: {"active": c.active.get().reshape(n, steps), "total": c.total.get().reshape(n, steps)}
                  for name, c in counters.items()}
    finally:
        bar.close()
        sampler.stop()
    return {"images": images, "counters": counts, "network": net}
