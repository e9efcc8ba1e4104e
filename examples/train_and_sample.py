"""Train a small spiking denoiser with the Python API, then sample a grid from it.

    python examples/train_and_sample.py --data digits --steps 300 --out out/example

Uses scikit-learn's bundled 8x8 digits by default, so it runs anywhere in a minute or two on a CPU;
`--data mnist` (after `spikediff data fetch mnist`) trains the 28x28 model instead.
"""

import argparse
from pathlib import Path

from spikediff.checkpoint import load_model
from spikediff.diffusion import sample_torch
from spikediff.images import save_grid
from spikediff.models import DenoiserConfig
from spikediff.train import TrainConfig, train

parser = argparse.ArgumentParser()
parser.add_argument("--data", default="digits", choices=["digits", "mnist", "fashion-mnist"])
parser.add_argument("--steps", type=int, default=300)
parser.add_argument("--out", type=Path, default=Path("out/example"))
args = parser.parse_args()

small = args.data == "digits"
config = TrainConfig(data=args.data, steps=args.steps, batch_size=64 if small else 128, lr=2e-3 if small else 1e-3,
                     warmup=20, model=DenoiserConfig(channels=16 if small else 32, hidden=128 if small else 256))
checkpoint = train(config, args.out)           # resumable: run it again to continue
model, schedule, _ = load_model(checkpoint)    # EMA weights
images = sample_torch(model, schedule, n=36, num_inference_steps=20, seed=0)
print("grid:", save_grid(images, args.out / "samples.png", scale=4 if small else 2))
