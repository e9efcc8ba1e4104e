"""The Spiking-Diffusion sampler in Loihi fixed point, batched, without Lava: what its two fixed-point Lava
runs compute (``runtime.vq_sampler.sample_vq_lava``), token for token and spike for spike.

The host side is the same numpy code the Lava ``TokenSampler`` runs (``token_input``, ``unmask_step`` with the
same draws, the same readout arithmetic), and both networks are ``fixed_sim.FixedNetwork``.
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from .. import SpikediffError


def sample_vq_fixed(graphs: dict, n: int, steps: int, seed: int = 0, temperature: float | None = None,
                    fixed: dict | None = None, device="cpu", batch_size: int | None = None, progress: bool = False,
                    first: int = 0) -> dict:
    """Images (n, C, H, W), tokens (n, G, G), ``counters`` {SDID population: {"active": (n, steps)}} and
    ``decoder_counters`` {decoder population: (n,)} spikes, ``fixed_point`` {"sdid", "decoder"}, and
    ``parts`` {"sdid", "decoder"}: each network's events in the form ``fixed_sampler.sample_fixed`` returns
    them (what ``events.count_events`` prices; the decoder runs one evaluation per image)."""
    from ..diffusion.absorbing import UnmaskDraws, masked_counts, resolve_temperature, unmask_step
    from ..export.fixed_point import for_graph
    from ..export.folded import fold
    from ..models.spiking_vq import token_onehot
    from ..models.token_denoiser import token_input
    from ..runtime.vq_sampler import check_graphs, decoded_images
    from .fixed_sim import EventTally, FixedNetwork

    ms, md = check_graphs(graphs)
    temperature = resolve_temperature(temperature)
    if batch_size is not None and int(batch_size) < 1:
        raise SpikediffError(f"batch size must be at least 1, got {batch_size}")
    folded = {name: fold(graph) for name, graph in graphs.items()}
    fixed = fixed or {name: for_graph(graphs[name], folded[name]) for name in ("sdid", "decoder")}
    nets = {name: FixedNetwork(folded[name], fixed[name], device) for name in ("sdid", "decoder")}
    batch_size = int(batch_size or (32 if nets["sdid"].device.type == "cpu" else 1024))
    k, g = int(ms["codebook_size"]), int(ms["grid"])
    length, t_sdid, t_dec = g * g, int(ms["snn_steps"]), int(md["snn_steps"])
    counts = masked_counts(steps, length, str(ms["mask_schedule"]))
    draws = UnmaskDraws(n, length, seed, first)
    p_s, p_d = folded["sdid"].plan, folded["decoder"].plan
    scale = t_sdid * fixed["sdid"].readout_scale(p_s.readout)
    sdid_counts = {name: np.zeros((n, steps), np.int64) for name in p_s.populations if name != p_s.readout}
    dec_counts = {name: np.zeros(n, np.int64) for name in p_d.populations if name != p_d.readout}
    tokens = np.full((n, length), k, dtype=np.int64)
    tally = {name: EventTally(f.plan) for name, f in folded.items()}

    images = np.zeros((n, *(int(d) for d in md["image_shape"])), np.float32)
    with tqdm(total=n * (steps + 1), desc=f"fixed-point sim ({nets['sdid'].device.type})", unit="image-step",
              disable=not progress) as bar:
        for start in range(0, n, batch_size):
            sl = slice(start, min(start + batch_size, n))
            tok, part = tokens[sl], draws[sl]
            for step in range(steps):
                inp = token_input(tok.reshape(-1, g, g), counts[step] / length, k, int(ms["time_features"]),
                                  float(ms["max_period"])).astype(np.float64)
                res = nets["sdid"].evaluate(inp, t_sdid)
                tally["sdid"].add(res)
                for name in sdid_counts:
                    sdid_counts[name][sl, step] = res["spikes"][name].sum(1).cpu().numpy()
                logits = res["readout_int"].sum(1).cpu().numpy().astype(np.float64) / scale
                tok = unmask_step(tok, logits.reshape(len(tok), k, length), step, counts, part, temperature)
                bar.update(len(tok))
            tokens[sl] = tok
            res = nets["decoder"].evaluate(token_onehot(tok.reshape(-1, g, g), k, "float64"), t_dec)
            tally["decoder"].add(res)
            for name in dec_counts:
                dec_counts[name][sl] = res["spikes"][name].sum(1).cpu().numpy()
            readout = res["readout_int"].cpu().numpy() / fixed["decoder"].readout_scale(p_d.readout)
            images[sl] = decoded_images(readout.reshape(len(tok), t_dec, -1), md)
            bar.update(len(tok))
    sdid_counters = {name: {"active": c} for name, c in sdid_counts.items()}
    parts = {name: t.to_dict() for name, t in tally.items()}
    parts["sdid"].update(images=images, denoising_steps=steps, num_steps=t_sdid, counters=sdid_counters,
                         folded=folded["sdid"], fixed_point=fixed["sdid"])
    parts["decoder"].update(images=images, denoising_steps=1, num_steps=t_dec, folded=folded["decoder"],
                            fixed_point=fixed["decoder"],
                            counters={name: {"active": c[:, None]} for name, c in dec_counts.items()})
    return {"images": images, "tokens": tokens.reshape(n, g, g), "counters": sdid_counters,
            "decoder_counters": dec_counts, "fixed_point": fixed, "parts": parts}


def same_as_lava(sim: dict, lava: dict) -> bool:
    """Whether a fixed-point Lava run gave exactly the simulator's tokens, images and spike counts."""
    return bool(np.array_equal(sim["tokens"], lava["tokens"]) and np.array_equal(sim["images"], lava["images"])
                and all(np.array_equal(sim["counters"][k]["active"], c["active"]) for k, c in lava["counters"].items())
                and all(np.array_equal(sim["decoder_counters"][k], c) for k, c in lava["decoder_counters"].items()))
