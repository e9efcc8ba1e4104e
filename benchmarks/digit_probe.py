"""How digit-like the shipped MNIST samplers' samples are (a pixel DDIM, mnist-patch unless --model, and
mnist-vq), by the MNIST digit probe (spikediff.metrics),
beside real test digits and random speckle as the two ends of the scale; in floating point (PyTorch)
and in Loihi fixed point (the bit-exact simulator, i.e. what the Lava fixed-point run gives).

Usage: python benchmarks/digit_probe.py --out benchmarks/results/digit_probe.md
Writes a markdown table and a JSON file beside it, with the command and the machine that produced them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from _report import add_pixel_model_option, write_report

from spikediff.checkpoint import load_model, trained_steps
from spikediff.data import load_images
from spikediff.diffusion import kinds, sample_torch
from spikediff.diffusion.absorbing import resolve_temperature
from spikediff.diffusion.sampler import initial_noise
from spikediff.export.deployment import compile_sampler
from spikediff.export.nir_graph import sampler_graphs
from spikediff.hardware_sim.sampler import sample_sim
from spikediff.metrics import digit_probe_score, fit_digit_probe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/digit_probe.md"))
    add_pixel_model_option(parser)
    parser.add_argument("-n", type=int, default=256, help="images per row")
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 20, 50], help="DDIM steps to try")
    parser.add_argument("--fixed-steps", type=int, nargs="*", default=[10, 20],
                        help="DDIM steps to try in fixed point")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    clf = fit_digit_probe()
    rows = {"MNIST test digits": load_images("mnist", "test", limit=args.n)[0] / 255.0}
    rng = np.random.default_rng(0)
    rows["random speckle (20% on)"] = rng.random((args.n, 28, 28)) * (rng.random((args.n, 28, 28)) > 0.8)
    model, schedule, ckpt = load_model(args.model)
    for steps in args.steps:
        x = sample_torch(model, schedule, args.n, num_inference_steps=steps, seed=args.seed, progress=False)
        rows[f"{args.model}, {steps} DDIM steps"] = ((x + 1) / 2).clamp(0, 1).numpy()[:, 0]
    sd = compile_sampler(sampler_graphs(model, schedule), fixed_point=True)
    noise = initial_noise(args.n, (1, model.config.image_size, model.config.image_size), args.seed).numpy()
    for steps in args.fixed_steps:
        x = sample_sim(sd, args.n, steps, noise=noise, progress=True)["images"]
        rows[f"{args.model}, fixed point, {steps} DDIM steps"] = np.clip((x + 1) / 2, 0, 1)[:, 0]
    vq = load_model("mnist-vq")[0]  # the spiking-vq sampler: float, then the deployed fixed point
    x = kinds.get("spiking-vq").sample_torch(vq, None, args.n, 20, seed=args.seed, progress=False)
    rows[f"mnist-vq, 20 unmasking steps, temperature {resolve_temperature(None):g}"] = ((x + 1) / 2).clamp(0, 1).numpy()[:, 0]
    x = sample_sim(compile_sampler(sampler_graphs(vq), fixed_point=True), args.n, 20, seed=args.seed)["images"]
    rows["mnist-vq, fixed point, 20 unmasking steps"] = np.clip((x + 1) / 2, 0, 1)[:, 0]
    scores = {name: digit_probe_score(clf, images) for name, images in rows.items()}
    for name, score in scores.items():
        print(f"{name:40s} {score}")

    payload = {"checkpoint_step": trained_steps(ckpt), "n": args.n, "seed": args.seed, "scores": scores}
    body = [
        "A logistic-regression classifier fit on 10,000 MNIST training images; a sample counts as confident "
        f"when its top class has p > 0.9. {args.n} images per row; {args.model} at step "
        f"{payload['checkpoint_step']}, seed {args.seed}.",
        "",
        "| images | confident | classes | predicted class counts 0-9 |",
        "|---|---:|---:|---|",
        *[f"| {name} | {s['confident']:.1%} | {s['classes']} | {' '.join(map(str, s['counts']))} |"
          for name, s in scores.items()],
    ]
    write_report(args.out, "Digit probe: how digit-like are the samples?", payload, body)


if __name__ == "__main__":
    main()
