"""Which network of a latent DDIM sampler loses quality in fixed point: each one deployed alone, the other in float.

Usage: python benchmarks/fixed_point_split.py --out benchmarks/results/fixed_point_split.md [--model mnist-latent]
       [-n 1000] [--ref-n 5000] [--steps 20] [--no-bias-correction]

``--no-bias-correction`` compiles without the readout bias correction (``export.bias_correction``), as the
committed results were made (before the compiler had it).

Rows, all from the same initial noise (seed 0, as ``spikediff eval``), FID of n samples against the first ref-n
training images:
- fixed-point denoiser (bit-exact simulator) -> its final latents -> float decoder (PyTorch);
- float denoiser (PyTorch, DDIM) -> its final latents -> fixed-point decoder (bit-exact simulator);
- both float and both fixed point, for reference (what ``spikediff eval --backend torch|sim`` measures).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from _report import write_report

from spikediff.checkpoint import load_model
from spikediff.diffusion.sampler import initial_noise, sample_torch
from spikediff.export.deployment import compile_sampler
from spikediff.export.nir_graph import sampler_graphs
from spikediff.export.simulator import Simulator
from spikediff.hardware_sim.sampler import sample_sim
from spikediff.metrics.fid import InceptionFeatures, reference_features, scores


def fixed_decoder(sd, z: np.ndarray, steps: int, batch: int = 100) -> np.ndarray:
    """Standardized latents -> images through the fixed-point decoder on the bit-exact simulator, with the host
    program's own arithmetic (as ``sample_sim`` decodes)."""
    program = sd.program(len(z), steps)
    dep = sd.networks[program.final]
    sim = Simulator(dep)
    out = []
    for i in range(0, len(z), batch):
        part, index = np.asarray(z[i:i + batch], np.float64), np.arange(i, min(i + batch, len(z)))
        res = sim.evaluate(program.final_inputs(part, index))
        out.append(program.images(part, res["readout_int"].cpu().numpy() / dep.readout_scale()))
    return np.concatenate(out).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/fixed_point_split.md"))
    ap.add_argument("--model", default="mnist-latent")
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("--ref-n", type=int, default=5000)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--no-bias-correction", action="store_true", help="compile without the readout bias correction")
    args = ap.parse_args()

    model, schedule, raw = load_model(args.model)
    data = raw["train"]["data"]
    fixed = compile_sampler(sampler_graphs(model, schedule), fixed_point=True,
                            bias_correction=not args.no_bias_correction)
    noise = initial_noise(args.n, model.latent_shape, 0)
    with torch.no_grad():
        z_float = sample_torch(model.denoiser, schedule, args.n, args.steps, noise=noise, shape=model.latent_shape,
                               clip_sample=False, progress=True)
        sim = sample_sim(fixed, args.n, args.steps, progress=True)
        z_fixed = torch.from_numpy(np.asarray(sim["latents"]))
        images = {
            "float denoiser, float decoder": torch.cat([model.decode(z) for z in z_float.split(100)]).numpy(),
            "fixed-point denoiser, float decoder": torch.cat([model.decode(z) for z in z_fixed.split(100)]).numpy(),
            "float denoiser, fixed-point decoder": fixed_decoder(fixed, z_float.numpy(), args.steps),
            "fixed-point denoiser, fixed-point decoder": sim["images"],
        }
    extractor = InceptionFeatures()
    reference = reference_features(data, "train", args.ref_n, extractor=extractor)
    rows = []
    for name, x in images.items():
        s = scores(extractor((x + 1) / 2, progress=True, desc=name), reference)
        rows.append({"networks": name, "fid": s["fid"], "kid": s["kid"], "n": args.n, "ref_n": args.ref_n})
        print(rows[-1], flush=True)
    latent_gap = float(((z_fixed - z_float) ** 2).mean() / (z_float ** 2).mean())
    body = [f"`{args.model}`, {args.steps} DDIM steps, seed 0: FID of {args.n} samples against the first "
            f"{args.ref_n} {data} training images. Fixed point: the bit-exact simulator (what Loihi and Lava's "
            f"fixed-point run compute); float: PyTorch.", "",
            "| networks | FID | KID x 1e-3 |", "|---|---:|---:|"]
    body += [f"| {r['networks']} | {r['fid']:.2f} | {r['kid'] * 1e3:.1f} |" for r in rows]
    body += ["", f"Final latents, fixed-point denoiser against float: mean squared difference {latent_gap:.3f} of "
             f"their mean square (same noise, same steps)."]
    write_report(args.out, "Fixed point, network by network", {"rows": rows, "latent_relative_mse": latent_gap},
                 body)


if __name__ == "__main__":
    main()
