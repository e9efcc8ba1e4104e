"""Which network of a two-network sampler loses quality in fixed point: each one deployed alone, the other in float.

Usage: python benchmarks/fixed_point_split.py --out benchmarks/results/fixed_point_split.md [--model mnist-latent]
       [-n 1000] [--ref-n 5000] [--steps 20] [--temperature T] [--no-bias-correction]

Takes a latent DDIM (denoiser, then decoder) or a spiking-vq sampler (SDID, then token decoder).
``--no-bias-correction`` compiles without the readout bias correction (``export.bias_correction``), as the
first committed results were made (before the compiler had it).

Rows, all from the same seed (0, as ``spikediff eval``), FID of n samples against the first ref-n training images:
- fixed-point denoiser (bit-exact simulator) -> its final latents or tokens -> float decoder (PyTorch);
- float denoiser (PyTorch) -> its final latents or tokens -> fixed-point decoder (bit-exact simulator);
- both float and both fixed point, for reference (what ``spikediff eval --backend torch|sim`` measures).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from _report import write_report

from spikediff.checkpoint import load_model, trained_on
from spikediff.diffusion import kinds
from spikediff.diffusion.absorbing import resolve_temperature, sample_tokens
from spikediff.diffusion.sampler import initial_noise, sample_torch
from spikediff.export.deployment import compile_sampler
from spikediff.export.nir_graph import sampler_graphs
from spikediff.export.simulator import Simulator
from spikediff.hardware_sim.sampler import sample_sim
from spikediff.metrics.fid import InceptionFeatures, reference_features, scores


def fixed_decoder(sd, states: np.ndarray, steps: int, batch: int = 100, **options) -> np.ndarray:
    """Final latents or tokens -> images through the fixed-point decoder on the bit-exact simulator, with the
    host program's own arithmetic (as ``sample_sim`` decodes)."""
    program = sd.program(len(states), steps, **options)
    dep = sd.networks[program.final]
    sim = Simulator(dep)
    states = np.asarray(states, np.float64).reshape(len(states), *program.state_shape)
    out = []
    for i in range(0, len(states), batch):
        part, index = states[i:i + batch], np.arange(i, min(i + batch, len(states)))
        res = sim.evaluate(program.final_inputs(part, index))
        out.append(program.images(part, res["readout_int"].cpu().numpy() / dep.readout_scale()))
    return np.concatenate(out).astype(np.float32)


def latent_states(model, schedule, fixed, args) -> tuple:
    """(float final latents, fixed-point final latents, fixed-point images, how far apart, options)."""
    noise = initial_noise(args.n, model.latent_shape, 0)
    z_float = sample_torch(model.denoiser, schedule, args.n, args.steps, noise=noise, shape=model.latent_shape,
                           clip_sample=False, progress=True)
    sim = sample_sim(fixed, args.n, args.steps, progress=True)
    z_fixed = torch.from_numpy(np.asarray(sim["latents"]))
    gap = float(((z_fixed - z_float) ** 2).mean() / (z_float ** 2).mean())
    return z_float, z_fixed, sim["images"], {"latent_relative_mse": gap}, {}


def token_states(model, schedule, fixed, args) -> tuple:
    """(float final tokens, fixed-point final tokens, fixed-point images, how far apart, options)."""
    options = {"temperature": resolve_temperature(args.temperature)}
    t_float = sample_tokens(model.sdid, args.n, args.steps, seed=0, schedule=model.mask_schedule, progress=True,
                            **options)
    sim = sample_sim(fixed, args.n, args.steps, progress=True, **options)
    t_fixed = torch.from_numpy(np.asarray(sim["tokens"]))
    return t_float, t_fixed, sim["images"], {"token_agreement": float((t_fixed == t_float).double().mean())}, options


# sampler kind -> how its final states (what the decoder reads) come out of each denoiser
STATES = {"latent-ddim": latent_states, "spiking-vq": token_states}
GAPS = {"latent_relative_mse": "Final latents, fixed-point denoiser against float: mean squared difference {:.3f} of "
                               "their mean square (same noise, same steps).",
        "token_agreement": "Final tokens, fixed-point SDID against float: {:.1%} the same (same draws, same steps)."}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/fixed_point_split.md"))
    ap.add_argument("--model", default="mnist-latent")
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("--ref-n", type=int, default=5000)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--temperature", type=float, default=None,
                    help="spiking-vq: sampling temperature [default: the sampler's, as spikediff eval]")
    ap.add_argument("--no-bias-correction", action="store_true", help="compile without the readout bias correction")
    args = ap.parse_args()

    model, schedule, raw = load_model(args.model)
    kind = kinds.of_model(model).name
    if kind not in STATES:
        raise SystemExit(f"--model {args.model}: a {kind} sampler has one network; this splits "
                         f"{' and '.join(STATES)} samplers")
    data = trained_on(raw)
    fixed = compile_sampler(sampler_graphs(model, schedule), fixed_point=True,
                            bias_correction=not args.no_bias_correction)
    with torch.no_grad():
        s_float, s_fixed, fixed_images, gap, options = STATES[kind](model, schedule, fixed, args)
        images = {
            "float denoiser, float decoder": torch.cat([model.decode(s) for s in s_float.split(100)]).numpy(),
            "fixed-point denoiser, float decoder": torch.cat([model.decode(s) for s in s_fixed.split(100)]).numpy(),
            "float denoiser, fixed-point decoder": fixed_decoder(fixed, s_float.numpy(), args.steps, **options),
            "fixed-point denoiser, fixed-point decoder": fixed_images,
        }
    extractor = InceptionFeatures()
    reference = reference_features(data, "train", args.ref_n, extractor=extractor)
    rows = []
    for name, x in images.items():
        s = scores(extractor((x + 1) / 2, progress=True, desc=name), reference)
        rows.append({"networks": name, "fid": s["fid"], "kid": s["kid"], "n": args.n, "ref_n": args.ref_n})
        print(rows[-1], flush=True)
    body = [f"`{args.model}`, {args.steps} {kinds.of_model(model).step_name}, seed 0"
            + "".join(f", {k} {v}" for k, v in options.items())
            + f": FID of {args.n} samples against the first {args.ref_n} {data} training images. Fixed point: the "
            f"bit-exact simulator (what Loihi and Lava's fixed-point run compute); float: PyTorch.", "",
            "| networks | FID | KID x 1e-3 |", "|---|---:|---:|"]
    body += [f"| {r['networks']} | {r['fid']:.2f} | {r['kid'] * 1e3:.1f} |" for r in rows]
    body += ["", *(GAPS[k].format(v) for k, v in gap.items())]
    write_report(args.out, "Fixed point, network by network", {"model": args.model, "rows": rows, **gap}, body)


if __name__ == "__main__":
    main()
