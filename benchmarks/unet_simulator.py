"""The bit-exact simulator on a spiking U-Net: derived space-to-depth kernels dense, or in natural form.

A U-Net's decoder synapses are Conv2d kernels derived for space-to-depth layouts, mostly structural zeros
(spikediff/models/s2d.py); the fixed-point simulator runs each in its natural form where that sums the same
integers, and an up-sampling's (which no natural kernel derives) phase by phase, skipping the zeros
(spikediff/export/natural_conv.py). This measures one denoiser call on a batch of the sampler's real
first-step inputs both ways, checks that readouts and spike counts are equal, and times the PyTorch float model
on the same batch for scale. Compiled without the readout bias correction (it does not change the network's
shape or cost, and takes minutes on a U-Net).

Usage: python benchmarks/unet_simulator.py --out benchmarks/results/unet_simulator.md
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from _report import write_report

from spikediff.checkpoint import load_model
from spikediff.export.deployment import compile_sampler
from spikediff.export.natural_conv import PhaseSplitConv
from spikediff.export.nir_graph import sampler_graphs
from spikediff.export.simulator import Simulator


def best_of(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="benchmarks/checkpoints/unet-small.resume.pt")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20, help="DDIM steps per image, for the per-image figure")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/unet_simulator.md"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, schedule, _ = load_model(args.checkpoint)
    sd = compile_sampler(sampler_graphs(model, schedule), fixed_point=True, bias_correction=False)
    program = sd.program(args.batch, args.steps)
    index = np.arange(args.batch)
    inputs = program.inputs(program.start(index), index, 0)
    natural, dense = Simulator(sd.loop), Simulator(sd.loop, natural=False)
    a, b = natural.evaluate(inputs), dense.evaluate(inputs)
    equal = bool(torch.equal(a["readout_int"], b["readout_int"])) and all(
        torch.equal(a["neuron_spikes"][k], b["neuron_spikes"][k]) for k in a["neuron_spikes"])
    t_nat = best_of(lambda: natural.evaluate(inputs), args.repeats)
    t_dense = best_of(lambda: dense.evaluate(inputs), args.repeats)
    x = torch.randn(args.batch, *program.state_shape)
    t = torch.full((args.batch,), schedule.num_train_timesteps - 1)
    with torch.no_grad():
        t_torch = best_of(lambda: model(x, t), args.repeats)
    convs = [f for f in sd.loop.folded.synapses if f.conv is not None]
    derived = [f for f in convs if f.conv.s2d is not None]
    per_image = {k: v / args.batch * args.steps for k, v in
                 (("dense", t_dense), ("natural", t_nat), ("torch", t_torch))}
    split = sum(isinstance(form, PhaseSplitConv) for form in natural.natural.values())
    payload = {"checkpoint": args.checkpoint, "batch": args.batch, "threads": args.threads,
               "steps": args.steps, "conv_synapses": len(convs), "derived": len(derived),
               "natural_form": len(natural.natural) - split, "phase_split": split,
               "dense": len(derived) - len(natural.natural), "equal": equal,
               "seconds_per_call": {"dense": t_dense, "natural": t_nat, "torch": t_torch},
               "seconds_per_image": per_image}
    body = [f"`{args.checkpoint}`, fixed point, one denoiser call on a batch of {args.batch} of the sampler's "
            f"first-step inputs, {args.threads} thread(s), best of {args.repeats}; per image: x {args.steps} DDIM "
            f"steps / batch. {len(derived)} of {len(convs)} convolution synapses are derived for space-to-depth "
            f"layouts; {len(natural.natural) - split} run in natural form, {split} phase by phase (up-samplings, "
            f"whose quantized kernels no natural one derives), {payload['dense']} dense. Readouts and spike counts "
            f"of the two forms equal: **{equal}**.", "",
            "| form | s per call | s per image | vs dense |", "|---|---:|---:|---:|"]
    for k, label in (("dense", "simulator, derived kernels dense"), ("natural", "simulator, natural and phase-split forms"),
                     ("torch", "PyTorch float model (for scale)")):
        sec = payload["seconds_per_call"][k]
        body.append(f"| {label} | {sec:.3g} | {per_image[k]:.3g} | {t_dense / sec:.2f}x |")
    write_report(args.out, "The fixed-point simulator on a spiking U-Net", payload, body)


if __name__ == "__main__":
    main()
