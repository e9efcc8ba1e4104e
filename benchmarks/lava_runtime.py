"""Lava CPU simulator (Loihi2SimCfg, floating point): time per image and per step, and exactness, for the
shipped checkpoint against the PyTorch sampler with the same noise.

Usage: python benchmarks/lava_runtime.py --out benchmarks/results/lava_runtime.md
Writes a markdown table and a JSON file beside it, with the command and the machine that produced them.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from _report import write_report

from spikediff.checkpoint import load_model
from spikediff.diffusion.sampler import initial_noise, sample_torch
from spikediff.export.nir_graph import to_nir
from spikediff.runtime.lava_sampler import sample_lava


def single_calls(model, n: int = 3) -> dict:
    """Independent denoiser calls (no feedback through the DDIM loop): readout and spikes per layer."""
    from spikediff.export.nir_to_lava import build
    from spikediff.runtime.lava_eval import run_windows

    gen = torch.Generator().manual_seed(0)
    cfg = model.config
    x = torch.randn(n, cfg.in_channels, cfg.image_size, cfg.image_size, generator=gen)
    t = torch.linspace(999, 0, n).round().long()
    res = run_windows(build(to_nir(model), cfg.num_steps), model.make_input(x, t).numpy(), record_spikes=True)
    diff, equal = 0.0, True
    for i in range(n):
        stats = {}
        with torch.no_grad():
            ref = model.readout_current(x[i:i + 1], t[i:i + 1], stats=stats)[0].numpy()
        diff = max(diff, float(np.abs(res["readout"][i].mean(0).reshape(-1) - ref).max()))
        equal &= all(int(res["spikes"][k][i].sum()) == int(v) for k, v in stats.items())
    return {"calls": n, "timesteps": t.tolist(), "max_abs_readout_diff": diff, "spike_counts_equal": equal}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/lava_runtime.md"))
    parser.add_argument("-n", type=int, default=2, help="images")
    parser.add_argument("--steps", type=int, default=10, help="DDIM steps")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)  # the Lava run is single-threaded in the parent too: compare like with like

    model, schedule, _ = load_model()
    cfg = model.config
    single = single_calls(model)
    noise = initial_noise(args.n, (cfg.in_channels, cfg.image_size, cfg.image_size), args.seed)

    expected, torch_spikes = [], []
    start = time.perf_counter()
    for i in range(args.n):  # one image at a time, for spike counts per image
        stats = {}
        expected.append(sample_torch(model, schedule, 1, args.steps, noise=noise[i:i + 1], progress=False,
                                     stats=stats)[0].numpy())
        torch_spikes.append(stats)
    torch_s = time.perf_counter() - start

    start = time.perf_counter()
    result = sample_lava(to_nir(model, schedule), noise.numpy(), args.steps, progress=True)
    lava_s = time.perf_counter() - start
    net = result["network"]
    max_diff = float(np.abs(result["images"] - np.stack(expected)).max())
    layers = {}
    for name in model.spiking_layers:
        lava = result["counters"][name]["active"].sum(1).tolist()  # the T steps the model computes in
        ref = [s[name] for s in torch_spikes]
        tails = (result["counters"][name]["total"] - result["counters"][name]["active"]).sum(1).tolist()
        layers[name] = {"lava": lava, "torch": ref, "equal": lava == ref, "lava_spikes_outside_active_steps": tails}
    lava_steps = args.n * args.steps * net.window
    row = {"images": args.n, "ddim_steps": args.steps, "window": net.window, "lava_steps": lava_steps,
           "lava_s": lava_s, "lava_s_per_image": lava_s / args.n, "lava_s_per_denoiser_call": lava_s / (args.n * args.steps),
           "lava_ms_per_step": 1000 * lava_s / lava_steps, "torch_s_per_image_batch1": torch_s / args.n,
           "max_abs_image_diff": max_diff, "spike_counts_equal": all(v["equal"] for v in layers.values()),
           "neurons": sum(model.neuron_counts().values()), "processes": len(net.processes) + 1 + len(layers)}
    print(row)

    payload = {"model": cfg.to_dict(), "result": row, "layers": layers, "single_calls": single}
    body = [
        f"{args.n} images x {args.steps} DDIM steps, all in one Lava run ({row['processes']} Lava processes, "
        f"{row['neurons']} neurons, window of {net.window} Lava steps per denoiser call). The wall time includes "
        "building, compiling and starting the Lava network.",
        "",
        "| s per image | s per denoiser call | ms per Lava step | torch s per image (batch 1) | max abs image diff | spike counts equal |",
        "|---:|---:|---:|---:|---:|:---:|",
        f"| {row['lava_s_per_image']:.1f} | {row['lava_s_per_denoiser_call']:.2f} | {row['lava_ms_per_step']:.0f} | "
        f"{row['torch_s_per_image_batch1']:.2f} | {max_diff:.2e} | {'yes' if row['spike_counts_equal'] else 'NO'} |",
        "",
        f"Single denoiser calls ({single['calls']}, t = {single['timesteps']}, no DDIM feedback): max abs readout "
        f"difference {single['max_abs_readout_diff']:.1e}, spike counts per layer equal: "
        f"{'yes' if single['spike_counts_equal'] else 'NO'}.",
        "",
        "Spike counts compare the T steps each layer computes in (PyTorch counts only those). Per layer, Lava vs "
        "PyTorch, summed over the images:",
        "",
        "| layer | Lava | PyTorch | Lava spikes outside the active steps |",
        "|---|---:|---:|---:|",
        *[f"| {k} | {sum(v['lava']):.0f} | {sum(v['torch']):.0f} | {sum(v['lava_spikes_outside_active_steps']):.0f} |"
          for k, v in layers.items()],
    ]
    write_report(args.out, "Lava CPU simulator: the shipped checkpoint, Loihi2SimCfg floating point", payload, body)


if __name__ == "__main__":
    main()
