"""Spiking-Diffusion sampling on Lava from its two NIR graphs (``export.nir_graph.vq_graphs``): the unmasking
loop in one Lava run, the token decoder in a second, floating point or Loihi fixed point."""

from __future__ import annotations

import numpy as np

from .. import SpikediffError

SDID_METADATA = ("snn_steps", "codebook_size", "grid", "time_features", "max_period", "mask_schedule")
DECODER_METADATA = ("snn_steps", "codebook_size", "image_shape", "readout_shape", "patch")


def check_graphs(graphs: dict) -> tuple:
    """(SDID metadata, decoder metadata), with a clear error if the pair does not fit together."""
    from ..export.nir_graph import read_metadata

    missing = {"sdid", "decoder"} - set(graphs)
    if missing:
        raise SpikediffError(f"spiking-vq sampling needs the sdid and decoder graphs; missing {sorted(missing)}")
    ms, md = read_metadata(graphs["sdid"], SDID_METADATA), read_metadata(graphs["decoder"], DECODER_METADATA)
    if int(ms["codebook_size"]) != int(md["codebook_size"]):
        raise SpikediffError(f"the SDID graph has {ms['codebook_size']} codes, the decoder graph "
                             f"{md['codebook_size']}: not one model's pair")
    return ms, md


def decoded_images(readout: np.ndarray, meta: dict) -> np.ndarray:
    """Decoder readout per step (N, T, flat), float units -> images (N, C, H, W) in [-1, 1]: the mean over
    T, the patch layout, the clamp. Lava and the fixed-point simulator both finish with this."""
    from .decode import unpatch

    return unpatch(readout.mean(1), 1, meta["readout_shape"], int(meta["patch"])).clip(-1, 1)


def sample_vq_lava(graphs: dict, n: int, steps: int, seed: int = 0, temperature: float | None = None,
                   target: str = "auto", fixed_point: bool = False, fixed: dict | None = None, progress: bool = True,
                   first: int = 0) -> dict:
    """n images: tokens by the SDID loop on Lava, then the decoder on Lava. ``fixed``: {"sdid", "decoder":
    FixedPoint} (default ``fixed_point.for_graph`` of each, when ``fixed_point``). ``temperature`` None: the
    default (``absorbing.DEFAULT_TEMPERATURE``). Draws as in
    ``absorbing.sample_tokens`` (image i uses those of image ``first + i``).

    Returns ``images`` (n, C, H, W), ``tokens`` (n, G, G), ``counters`` {population: {"active": (n, steps)}}
    of the SDID and ``decoder_counters`` {population: (n,)} spikes, ``pipeline``, ``network`` (the SDID's),
    ``decoder_network``, ``target``."""
    from ..diffusion.absorbing import UnmaskDraws, masked_counts, resolve_temperature
    from ..export.fixed_point import for_graph
    from ..export.folded import fold
    from ..export.nir_to_lava import build
    from ..models.spiking_vq import token_onehot
    from . import lava_token_sampler as lts
    from .lava_eval import run_windows
    from .lava_sampler import run_pipelined
    from .pipeline import Pipeline
    from .session import run_config

    ms, md = check_graphs(graphs)
    temperature = resolve_temperature(temperature)
    tag = "fixed_pt" if fixed_point else "floating_pt"
    run_cfg, where = run_config(target, tag)
    k, g = int(ms["codebook_size"]), int(ms["grid"])
    length = g * g
    counts = masked_counts(steps, length, str(ms["mask_schedule"]))
    folded = {name: fold(graph) for name, graph in graphs.items()}
    if fixed_point and fixed is None:
        fixed = {name: for_graph(graphs[name], folded[name]) for name in ("sdid", "decoder")}
    fx = fixed if fixed_point else {"sdid": None, "decoder": None}

    net = build(folded["sdid"], int(ms["snn_steps"]), fixed_point=fx["sdid"])
    pipe = Pipeline(images=n, steps=steps, num_steps=net.num_steps, period=net.period, window=net.window)
    host = {"codebook_size": k, "grid": g, "time_features": int(ms["time_features"]),
            "max_period": float(ms["max_period"]), "temperature": float(temperature),
            "readout_shape": net.readout_shape, "readout_perm": net.readout_perm}
    sampler = lts.TokenSampler(pipeline=pipe, host=host, draws=UnmaskDraws(n, length, seed, first), counts=counts,
                               input_shape_lava=net.input_shape_lava, readout_shape_lava=net.readout.v_out.shape,
                               readout_latency=net.readout_latency, input_scale=net.input_scale,
                               readout_scale=net.readout_scale)
    tokens, sdid_counts = run_pipelined(net, pipe, sampler, sampler.tokens, run_cfg,
                                        f"lava unmasking ({n} images x {steps} steps)", progress)
    tokens = tokens.astype(np.int64).reshape(n, g, g)
    if (tokens >= k).any():
        raise SpikediffError("the Lava token sampler left masked cells (please report this)")

    dnet = build(folded["decoder"], int(md["snn_steps"]), fixed_point=fx["decoder"])
    res = run_windows(dnet, token_onehot(tokens, k, "float64"), record_spikes=True, target=target)
    return {"images": decoded_images(res["readout"], md).astype(np.float32), "tokens": tokens,
            "counters": sdid_counts, "decoder_counters": {name: c.sum(1) for name, c in res["spikes"].items()},
            "pipeline": pipe, "network": net, "decoder_network": dnet, "target": where, "fixed_point": fixed}
