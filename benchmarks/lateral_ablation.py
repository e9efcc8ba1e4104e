"""The lateral-selection ablation: the FSDDIM-style denoiser as it is, with the lateral matrix, with the
selection network, and with both, each trained with the same budget and options on one dataset, then
measured like the headline table (FID/KID of the deployed fixed-point model and the float one, spikes,
synaptic ops and energy per image, cores, speeds).

Usage: python benchmarks/lateral_ablation.py --data mnist --steps 3000 [--runs runs/ablation] [-n 10000]
       [--ref-n 10000] [--device auto] [--out benchmarks/results/lateral_ablation_mnist.md]
Training resumes from what --runs holds (spikediff run directories, one per variant: <data>-<variant>), so
an interrupted ablation continues where it stopped; samples and features are cached as for the table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from model_table import measure, write_table

from spikediff.models import DenoiserConfig
from spikediff.train import TrainConfig, train

VARIANTS = {"base": {}, "lateral": {"lateral": True}, "selection": {"selection": True},
            "both": {"lateral": True, "selection": True}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="mnist", choices=["mnist", "fashion-mnist"])
    ap.add_argument("--steps", type=int, default=3000, help="training steps, the same for every variant")
    ap.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    ap.add_argument("--runs", type=Path, default=Path("runs/ablation"))
    ap.add_argument("--device", default="auto")
    ap.add_argument("-n", type=int, default=10000, help="samples per FID")
    ap.add_argument("--ref-n", type=int, default=10000, help="reference training images")
    ap.add_argument("--backends", nargs="+", default=["sim", "torch"])
    ap.add_argument("--n-lava", type=int, default=2, help="images timed on Lava")
    ap.add_argument("--out", type=Path, help="default: benchmarks/results/lateral_ablation_<data>.md")
    args = ap.parse_args()
    out = args.out or Path(f"benchmarks/results/lateral_ablation_{args.data}.md")
    command = "python " + " ".join(sys.argv)

    checkpoints = {}
    for variant, flags in VARIANTS.items():
        cfg = TrainConfig(data=args.data, steps=args.steps, batch_size=args.batch_size, device=args.device,
                          model=DenoiserConfig(**flags))
        print(f"== {variant}: spikediff train --data {args.data} --steps {args.steps} "
              + " ".join(f"--{k}" for k in flags))
        checkpoints[variant] = train(cfg, args.runs / f"{args.data}-{variant}")
    rows, grids = [], {}
    for variant, ckpt in checkpoints.items():
        got, images = measure(f"{args.data}-{variant}", ckpt, args.n, args.ref_n, 20, args.backends, args.n_lava,
                              command)
        rows, grids = rows + got, {**grids, **images}
    write_table(out, rows, grids, command, f"Lateral-selection ablation, {args.data}, {args.steps} training steps each")


if __name__ == "__main__":
    main()
