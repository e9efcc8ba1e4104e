"""Lateral-selection spiking diffusion on Lava: train a small model with a lateral matrix and a selection
network (8x8 digits, a minute on a CPU), export it to NIR with its recurrent edges, run the DDIM loop on
Lava's CPU simulator, and compare: float Lava against PyTorch, fixed-point Lava against the bit-exact
simulator. Then what each part of the network spent, in spikes per image.

    python examples/lateral_selection_on_lava.py [--steps 200] [-n 4] [--ddim-steps 5] [--out out/lateral-example]
"""

import argparse
from pathlib import Path

import nir
import numpy as np
import torch

from spikediff.checkpoint import load_model
from spikediff.diffusion.sampler import initial_noise, sample_torch
from spikediff.export.deployment import compile_sampler
from spikediff.export.nir_graph import to_nir, write_nir
from spikediff.hardware_sim.sampler import sample_sim
from spikediff.images import save_grid
from spikediff.models import DenoiserConfig
from spikediff.runtime.run import sample_lava
from spikediff.train import TrainConfig, train

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=200, help="training steps")
parser.add_argument("-n", type=int, default=4, help="images")
parser.add_argument("--ddim-steps", type=int, default=5)
parser.add_argument("--out", type=Path, default=Path("out/lateral-example"))
args = parser.parse_args()

model_cfg = DenoiserConfig(channels=8, hidden=32, lateral=True, selection=True, groups=4)
ckpt = train(TrainConfig(data="digits", steps=args.steps, batch_size=32, model=model_cfg), args.out / "run")
model, schedule, _ = load_model(ckpt)
print(f"lateral matrix after training: |W| mean {model.lateral.weight.abs().mean():.4f}, "
      f"largest {model.lateral.weight.abs().max():.4f}")

path = write_nir(to_nir(model, schedule), args.out / "lateral.nir")
graph = nir.read(path)  # everything below needs only the file
print("recurrent synapses in the NIR graph:", [f"{a} -> {b} -> {a}" for a, b in graph.edges if (b, a) in graph.edges])

noise = initial_noise(args.n, model.image_shape, 0)
lava = sample_lava(compile_sampler({"denoiser": graph}), args.n, args.ddim_steps, noise=noise.numpy())
with torch.no_grad():
    ref = sample_torch(model.double(), schedule, args.n, args.ddim_steps, noise=noise.double(), progress=False)
print("float: max |Lava - PyTorch| pixel difference:", float(np.abs(lava["images"] - ref.numpy()).max()))
sd = compile_sampler({"denoiser": graph}, fixed_point=True)  # compiled once for Lava and the simulator
fixed = sample_lava(sd, args.n, args.ddim_steps, noise=noise.numpy())
sim = sample_sim(sd, args.n, args.ddim_steps, noise=noise.numpy())
print("fixed point: Lava equals the bit-exact simulator:", bool(np.array_equal(fixed["images"], sim["images"])))
print("grid:", save_grid(torch.from_numpy(fixed["images"]), args.out / "samples.png", scale=8))
for name, c in fixed["counters"].items():
    print(f"{name:3s} spikes per image {c['active'].sum(1).mean():9.0f}")
