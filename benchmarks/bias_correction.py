"""What the readout bias correction of the fixed-point compile is worth: FID of each sampler deployed with and
without it, beside its float model.

Usage: python benchmarks/bias_correction.py --out benchmarks/results/bias_correction.md
       [--model mnist-latent mnist-vq mnist-patch] [-n 1000] [--ref-n 5000] [--steps 20]

Per sampler, from the same noise (seed 0, as ``spikediff eval``): FID and KID of n samples against the first ref-n
training images of its dataset, (1) fixed point as compiled now (bit-exact simulator: what Loihi and Lava's
fixed-point run compute), (2) fixed point compiled with ``bias_correction=False``, (3) the float PyTorch model;
and the offsets the compiler measured on its calibration inputs (its compile notes). Samples are cached per
checkpoint content and compiled integers (``model_table.cache_dir``, the folder names), so reruns only score.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _report import write_report
from model_table import cache_dir

from spikediff.checkpoint import load_model, trained_on
from spikediff.diffusion import kinds
from spikediff.metrics.evaluation import deploy, evaluate

VARIANTS = (("fixed point, bias-corrected", "sim", True), ("fixed point, no correction", "sim", False),
            ("float (PyTorch)", "torch", True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/bias_correction.md"))
    ap.add_argument("--model", nargs="+", default=["mnist-latent", "mnist-vq", "mnist-patch"])
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("--ref-n", type=int, default=5000)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()

    rows = []
    for name in args.model:
        model, schedule, raw = load_model(name)
        data, options = trained_on(raw), kinds.of_model(model).options()
        made = [(role, c) for role, dep in deploy(model, schedule, "sim").networks.items() for c in dep.bias_corrections]
        notes = [f"{role} {c.note()}" for role, c in made]
        offsets = [c.mean_abs_offset for _role, c in made]
        for variant, backend, correction in VARIANTS:
            r = evaluate(model, schedule, cache_dir(name), data, args.n, args.steps, backend, ref_split="train",
                         ref_n=args.ref_n, source=name, bias_correction=correction, **options)
            rows.append({"model": name, "variant": variant, "fid": r["fid"], "kid": r["kid"], "n": r["n"],
                         "ref_n": args.ref_n, "steps": args.steps, "calibration_offsets": offsets, "notes": notes})
            print(rows[-1], flush=True)
    body = [f"FID and KID of {args.n} samples ({args.steps} steps, seed 0) against the first {args.ref_n} training "
            "images of each sampler's dataset. Fixed point: the bit-exact simulator (equal to Lava's fixed-point run "
            "and to Loihi's integers); the correction is compiled from each kind's calibration inputs only.", "",
            "| sampler | deployed as | FID | KID x 1e-3 |", "|---|---|---:|---:|"]
    body += [f"| {r['model']} | {r['variant']} | {r['fid']:.2f} | {r['kid'] * 1e3:.1f} |" for r in rows]
    body += ["", "What the compiler measured on the calibration inputs (mean |fixed - float| of each readout neuron's "
             "mean output, before and after):", ""]
    for name in args.model:
        note = next(r["notes"] for r in rows if r["model"] == name)
        body += [f"- {name}: " + "; ".join(note) + "."]
    write_report(args.out, "Readout bias correction", {"rows": rows}, body)


if __name__ == "__main__":
    main()
