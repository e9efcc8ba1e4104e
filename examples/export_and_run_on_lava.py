"""Export a checkpoint to NIR, sample with the whole DDIM loop on Lava's CPU simulator, read the counters.

    python examples/export_and_run_on_lava.py [--checkpoint CKPT] [-n 1] [--steps 5] [--out out/lava-example]
                                              [--fixed-point]

With --fixed-point the network runs in Loihi integers (Lava's fixed_pt models, netx for the sequential
chains); the script prints the quantization error per layer and checks the run against the bit-exact
simulator.
"""

import argparse
from pathlib import Path

import nir
import numpy as np
import torch

from spikediff.diffusion.sampler import initial_noise
from spikediff.export.nir_graph import export_checkpoint
from spikediff.images import save_grid
from spikediff.runtime.counters import counters_report
from spikediff.runtime.lava_sampler import sample_lava

parser = argparse.ArgumentParser()
parser.add_argument("--checkpoint", type=Path, help="default: the shipped MNIST checkpoint")
parser.add_argument("-n", type=int, default=1)
parser.add_argument("--steps", type=int, default=5)
parser.add_argument("--out", type=Path, default=Path("out/lava-example"))
parser.add_argument("--fixed-point", action="store_true")
args = parser.parse_args()

nir_file = export_checkpoint(args.checkpoint, args.out / "denoiser.nir")  # the deployable artefact
graph = nir.read(nir_file)  # everything below needs only the NIR file (weights, schedule, host steps)
noise = initial_noise(args.n, tuple(int(d) for d in graph.metadata["image_shape"]), seed=0).numpy()

result = sample_lava(graph, noise, args.steps, fixed_point=args.fixed_point)
print("grid:", save_grid(torch.from_numpy(result["images"]), args.out / "samples.png", scale=4))
report = counters_report(result)
for name, layer in report["populations"].items():
    print(f"{name:6s} spikes/image {layer['spikes_per_image']:10.0f}  synaptic ops/image "
          f"{layer['synaptic_ops_per_image']:12.0f}  per denoising step {np.round(layer['spikes_per_denoising_step'])}")
print("total synaptic ops per image:", report["totals_per_image"]["synaptic_ops"])
print(f"images in flight: {report['images_in_flight']}, a new denoiser call every {report['period']} Lava steps, "
      f"{report['lava_steps_per_image']:.0f} Lava steps per image on {report['backend']}")

if args.fixed_point:
    from spikediff.hardware_sim.fixed_sampler import same_as_lava, sample_fixed

    fx = result["network"].fixed_point
    print(f"input sent as round(x * {fx.input_scale}); per layer: scale (threshold), weight error (max, rms):")
    for name, err in fx.errors.items():
        if "scale" in err:
            print(f"  {name:8s} scale {err['scale']}")
        else:
            print(f"  {name:8s} max {err['max_abs_error']:.2e}  rms {err['rms_error']:.2e}  (largest weight "
                  f"{err['max_abs_weight']:.3f} -> {err['max_int']})")
    sim = sample_fixed(graph, noise, args.steps, fixed=fx)
    print("bit-exact simulator gives the same images:", same_as_lava(sim, result))
