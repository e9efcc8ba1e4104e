"""Export a sampler to NIR, compile it once, sample with the whole denoising loop on Lava's CPU simulator, read
the counters. Any kind of sampler: the pixel DDIM (``mnist``), Spiking-Diffusion (``mnist-vq``: its token
loop, then its decoder), the latent DDIM.

    python examples/export_and_run_on_lava.py [--checkpoint mnist|mnist-vq|CKPT] [-n 1] [--steps 5]
                                              [--out out/lava-example] [--fixed-point]

With --fixed-point the networks run in Loihi integers (Lava's fixed_pt models, netx for the sequential
chains); the script prints the quantization error per layer and checks the run against the bit-exact
simulator.
"""

import argparse
from pathlib import Path

import torch

from spikediff.checkpoint import load_model
from spikediff.export.deployment import compile_sampler
from spikediff.export.nir_graph import export_sampler, read_sampler
from spikediff.images import save_grid
from spikediff.runtime.counters import counters_report
from spikediff.runtime.run import sample_lava

parser = argparse.ArgumentParser()
parser.add_argument("--checkpoint", default="mnist", help="a checkpoint or a shipped model's name")
parser.add_argument("-n", type=int, default=1)
parser.add_argument("--steps", type=int, default=5)
parser.add_argument("--out", type=Path, default=Path("out/lava-example"))
parser.add_argument("--fixed-point", action="store_true")
args = parser.parse_args()

model, schedule, _ = load_model(args.checkpoint)
files = export_sampler(model, schedule, args.out / "sampler.nir")  # the deployable artefacts
print("NIR files:", ", ".join(str(f) for f in files))
graphs = read_sampler(files[0])  # everything below needs only the files (weights, schedule, host steps)
sd = compile_sampler(graphs, fixed_point=args.fixed_point)  # compiled once, for Lava and the simulator alike
print(f"a {sd.kind.name} sampler; networks: {', '.join(sd.networks)}")

result = sample_lava(sd, args.n, args.steps)
print("grid:", save_grid(torch.from_numpy(result["images"]), args.out / "samples.png", scale=4))
report = counters_report(result)
for name, layer in report["populations"].items():
    print(f"{name:6s} spikes/image {layer['spikes_per_image']:10.0f}  synaptic ops/image "
          f"{layer['synaptic_ops_per_image']:12.0f}")
for name, layer in report.get("decoder", {}).items():
    print(f"decoder {name:6s} spikes/image {layer['spikes_per_image']:10.0f}")
print("total synaptic ops per image:", report["totals_per_image"]["synaptic_ops"])
print(f"images in flight: {report['images_in_flight']}, a new denoiser call every {report['period']} Lava steps, "
      f"{report['lava_steps_per_image']:.0f} Lava steps per image on {report['backend']}")

if args.fixed_point:
    from spikediff.hardware_sim.sampler import same_as_lava, sample_sim

    for role, dep in sd.networks.items():
        print(f"{role}: input sent as round(x * {dep.input_scale()}); per layer: scale, weight error (max, rms):")
        for name, err in dep.rounding().items():
            if "scale" in err:
                print(f"  {name:8s} scale {err['scale']}")
            else:
                print(f"  {name:8s} max {err['max_abs_error']:.2e}  rms {err['rms_error']:.2e}  (largest weight "
                      f"{err['max_abs_weight']:.3f} -> {err['max_int']})")
    sim = sample_sim(sd, args.n, args.steps)
    print("bit-exact simulator gives the same images:", same_as_lava(sim, result))
else:
    expected = sd.kind.sample_torch(model, schedule, args.n, args.steps, progress=False)
    print("max |Lava - PyTorch| pixel difference (float):",
          float((torch.from_numpy(result["images"]) - expected).abs().max()))
