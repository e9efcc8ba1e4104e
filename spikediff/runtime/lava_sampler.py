"""DDIM sampling with every denoiser evaluation on Lava's CPU simulator, the loop inside one Lava run."""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from .. import SpikediffError


def sample_lava(graph, noise: np.ndarray, num_inference_steps: int, progress: bool = True,
                target: str = "auto", pipelined: bool = True, fixed_point: bool = False) -> dict:
    """Run DDIM on Lava for every image in ``noise`` (N, C, H, W), all in one Lava run.

    Images are pipelined through the network (``runtime.pipeline``): a feedforward network takes a new
    evaluation every T Lava steps (``pipelined=False``: one at a time). The noise schedule and the host-side
    steps come from the graph's metadata. ``fixed_point``: Lava's bit-accurate ``fixed_pt`` models with Loihi
    integers (``fixed_point.for_graph``) instead of float64. ``target``: "sim" (Lava's CPU simulator),
    "loihi2" or "auto" (``session.run_config``). Returns ``{"images": (N, C, H, W), "counters": {population:
    {"active": (N, steps), "idle": spikes outside any evaluation}}, "pipeline", "network", "target"}``.
    """
    from ..export.fixed_point import for_graph
    from ..export.folded import fold
    from ..export.nir_graph import read_metadata
    from ..export.nir_to_lava import build
    from . import lava_processes as lp
    from .decode import decoder_config
    from .pipeline import Pipeline
    from .session import run_config

    meta = read_metadata(graph)
    tag = "fixed_pt" if fixed_point else "floating_pt"
    run_cfg, where = run_config(target, tag)  # a missing chip is reported before the network is built
    noise = np.asarray(noise, dtype=np.float32)
    if noise.ndim != 4 or len(noise) == 0 or list(noise.shape[1:]) != [int(d) for d in meta["image_shape"]]:
        raise SpikediffError(f"noise: expected shape (N >= 1, {', '.join(map(str, meta['image_shape']))}), "
                             f"got {noise.shape}")
    if int(num_inference_steps) < 1:
        raise SpikediffError(f"num_inference_steps must be at least 1, got {num_inference_steps}")
    n, steps = len(noise), int(num_inference_steps)
    folded = fold(graph)
    fx = for_graph(graph, folded) if fixed_point else None
    net = build(folded, int(meta["snn_steps"]), pipelined=pipelined, fixed_point=fx)
    pipe = Pipeline(images=n, steps=steps, num_steps=net.num_steps, period=net.period, window=net.window)
    decode = decoder_config(meta, net.readout_shape, net.readout_perm, "float32" if fixed_point else "float64")
    schedule = {"num_train_timesteps": int(meta["num_train_timesteps"]), "prediction_type": str(meta["prediction_type"])}
    sampler = lp.DDIMSampler(noise=noise.astype(np.float64), pipeline=pipe, input_shape_lava=net.input_shape_lava,
                             readout_shape_lava=net.readout.v_out.shape, decode=decode, schedule=schedule,
                             readout_latency=net.readout_latency, input_scale=net.input_scale,
                             readout_scale=net.readout_scale)
    images, counts = run_pipelined(net, pipe, sampler, sampler.images, run_cfg,
                                   f"lava denoising ({n} images x {steps} steps)", progress)
    return {"images": images, "counters": counts, "pipeline": pipe, "network": net, "target": where}


def run_pipelined(net, pipe, sampler, output, run_cfg, desc: str, progress: bool) -> tuple:
    """Connect a sampler process (``s_out`` to the network's input, ``a_in`` from its readout) and spike
    counters, run the whole ``Pipeline`` in one Lava run, and read the result back.

    Returns (the value of ``output``, a Var of the sampler, as float32; {population: {"active": (images,
    steps) spikes, "idle": spikes outside evaluations}})."""
    from . import lava_processes as lp
    from .session import lava_session

    for port in net.input_ports:
        sampler.s_out.connect(port)
    net.readout.v_out.connect(sampler.a_in)
    counters = {}
    for name, (proc, _count) in net.populations.items():
        counters[name] = lp.SpikeCounter(shape=proc.s_out.shape, pipeline=pipe, latency=net.latency[name])
        proc.s_out.connect(counters[name].s_in)

    chunk = pipe.cycle * pipe.period  # one step of every image in flight
    with tqdm(total=pipe.lava_steps, desc=desc, unit="lava step", disable=not progress) as bar, \
            lava_session(sampler, run_cfg) as run:
        done = 0
        while done < pipe.lava_steps:  # chunks only move the bar; the loop itself stays inside Lava
            k = min(chunk, pipe.lava_steps - done)
            run(k)
            done += k
            bar.update(k)
        result = output.get().astype(np.float32)
        active = {name: c.active.get() for name, c in counters.items()}
        idle = {name: float(c.idle.get()[0]) for name, c in counters.items()}
    counts = {}
    for name in counters:
        per_image = np.zeros((pipe.images, pipe.steps))
        for slot, count in enumerate(active[name]):
            job = pipe.job(slot)
            if job is not None:
                per_image[job] = count
        counts[name] = {"active": per_image, "idle": idle[name]}
    return result, counts
