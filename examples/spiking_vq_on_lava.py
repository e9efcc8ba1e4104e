"""Spiking-Diffusion on Lava: export a spiking-vq checkpoint as its two NIR graphs, run the unmasking loop
and the token decoder on Lava's CPU simulator, and check a fixed-point run against the bit-exact simulator.

    python examples/spiking_vq_on_lava.py [--checkpoint CKPT] [-n 4] [--steps 8] [--out out/vq-example]
                                          [--fixed-point]
"""

import argparse
from pathlib import Path

import nir
import torch

from spikediff.atomic import atomic_path
from spikediff.checkpoint import load_model
from spikediff.export.nir_graph import vq_graphs
from spikediff.images import save_grid
from spikediff.runtime.vq_sampler import sample_vq_lava

parser = argparse.ArgumentParser()
parser.add_argument("--checkpoint", default="mnist-vq", help="default: the shipped MNIST spiking-vq model")
parser.add_argument("-n", type=int, default=4)
parser.add_argument("--steps", type=int, default=8, help="unmasking steps")
parser.add_argument("--out", type=Path, default=Path("out/vq-example"))
parser.add_argument("--fixed-point", action="store_true")
args = parser.parse_args()

model, _, _ = load_model(args.checkpoint)
args.out.mkdir(parents=True, exist_ok=True)
graphs = {}
for name, graph in vq_graphs(model).items():  # the deployable artefacts: two NIR files
    with atomic_path(args.out / f"{name}.nir") as tmp:
        nir.write(tmp, graph)
    graphs[name] = nir.read(args.out / f"{name}.nir")  # everything below needs only the files

result = sample_vq_lava(graphs, args.n, args.steps, fixed_point=args.fixed_point)
print("grid:", save_grid(torch.from_numpy(result["images"]), args.out / "samples.png", scale=4))
print("tokens of image 0:\n", result["tokens"][0])
for name, c in result["counters"].items():
    print(f"SDID {name:3s} spikes per image {c['active'].sum(1).mean():10.0f}  per unmasking step "
          f"{c['active'].mean(0).round().astype(int)}")
for name, c in result["decoder_counters"].items():
    print(f"decoder {name:3s} spikes per image {c.mean():8.0f}")
if args.fixed_point:
    from spikediff.hardware_sim.vq_fixed_sampler import same_as_lava, sample_vq_fixed

    sim = sample_vq_fixed(graphs, args.n, args.steps, fixed=result["fixed_point"])
    print("bit-exact simulator gives the same tokens, images and spikes:", same_as_lava(sim, result))
else:
    expected = model.sample(args.n, args.steps, progress=False)
    print("max |Lava - PyTorch| pixel difference (float):", float((torch.from_numpy(result["images"]) - expected).abs().max()))
