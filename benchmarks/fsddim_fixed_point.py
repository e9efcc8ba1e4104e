"""The fsddim preset compiled compact to Loihi fixed point (merged taps, no dense derived kernel), weights as
initialised: compile time and memory, and one denoiser call on the bit-exact simulator.

Usage: python benchmarks/fsddim_fixed_point.py --width 128 --out benchmarks/results/fsddim_fixed_point.md
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np
import torch
from _report import write_report
from fsddim_paper import config

from spikediff.diffusion.schedule import NoiseSchedule
from spikediff.export.deployment import compile_sampler
from spikediff.export.nir_graph import sampler_graphs
from spikediff.export.simulator import Simulator
from spikediff.models.unet import SpikingUNet


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/fsddim_fixed_point.md"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = SpikingUNet(config(args.width)).eval()
    start = time.perf_counter()
    sd = compile_sampler(sampler_graphs(model, NoiseSchedule(1000, "v_prediction"), compact=True), fixed_point=True,
                         bias_correction=False)
    compiled = time.perf_counter() - start
    compile_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    dep = sd.loop
    sim = Simulator(dep)
    rng = np.random.default_rng(0)
    inputs = {k: rng.standard_normal((1, *s)) for k, s in dep.plan.inputs.items()}
    start = time.perf_counter()
    res = sim.evaluate(inputs)
    call = time.perf_counter() - start
    spikes = int(sum(int(v.sum()) for v in res["neuron_spikes"].values()))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    payload = {"width": args.width, "compile_s": compiled, "compile_peak_GB": compile_gb, "call_s": call,
               "spikes": spikes, "peak_GB": peak}
    body = [f"Width {args.width}, weights as initialised, compiled compact to Loihi fixed point without the readout's "
            f"bias correction: **{compiled:.1f} s**, peak {compile_gb:.1f} GB. One denoiser call (one image, T = "
            f"{model.config.num_steps}) on the bit-exact simulator: **{call:.1f} s**, {spikes} spikes; peak memory "
            f"{peak:.1f} GB."]
    write_report(args.out, "The paper's U-Net in Loihi fixed point, compact", payload, body)


if __name__ == "__main__":
    main()
