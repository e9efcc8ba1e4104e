"""Lava CPU simulator (Loihi2SimCfg): time per image and per step, and exactness, for a shipped
pixel denoiser (mnist-patch unless --model): floating point against the PyTorch sampler, fixed point against our
bit-exact simulator, with the same noise.

Usage: python benchmarks/lava_runtime.py --out benchmarks/results/lava_runtime.md
Writes a markdown table and a JSON file beside it, with the command and the machine that produced them.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import torch
from _report import add_pixel_model_option, write_report

from spikediff.checkpoint import load_model
from spikediff.diffusion.sampler import initial_noise, sample_torch
from spikediff.export.deployment import compile_graph, compile_sampler
from spikediff.export.nir_graph import sampler_graphs, to_nir
from spikediff.hardware_sim.sampler import sample_sim
from spikediff.runtime.run import sample_lava


def single_calls(model, n: int = 3) -> dict:
    """Independent denoiser calls (no feedback through the DDIM loop): readout and spikes per layer."""
    from spikediff.runtime.build import build
    from spikediff.runtime.run import run_windows

    gen = torch.Generator().manual_seed(0)
    cfg = model.config
    x = torch.randn(n, cfg.in_channels, cfg.image_size, cfg.image_size, generator=gen).double()
    t = torch.linspace(999, 0, n).round().long()
    model = copy.deepcopy(model).double()  # the float path computes in float64
    res = run_windows(build(compile_graph(to_nir(model))), model.make_input(x, t).numpy(), record_spikes=True)
    diff, equal = 0.0, True
    for i in range(n):
        stats = {}
        with torch.no_grad():
            ref = model.readout_current(x[i:i + 1], t[i:i + 1], stats=stats)[0].numpy()
        diff = max(diff, float(np.abs(res["readout"][i].mean(0).reshape(-1) - ref).max()))
        equal &= all(int(res["spikes"][k][i].sum()) == int(v) for k, v in stats.items())
    return {"calls": n, "timesteps": t.tolist(), "max_abs_readout_diff": diff, "spike_counts_equal": equal}


def lava_run(model, schedule, noise, steps: int, pipelined: bool, fixed_point: bool = False) -> tuple:
    start = time.perf_counter()
    sd = compile_sampler(sampler_graphs(model, schedule), fixed_point=fixed_point, pipelined=pipelined)
    result = sample_lava(sd, len(noise), steps, noise=noise.numpy(), progress=True, target="sim")
    return result, time.perf_counter() - start


def _row(args, result, lava_s: float, diff: float, equal: bool, reference: str) -> dict:
    net, pipe = result["network"], result["pipeline"]
    return {"images": args.n, "ddim_steps": args.steps, "period": net.period, "window": net.window,
            "images_in_flight": pipe.lanes, "lava_steps": pipe.lava_steps, "lava_s": lava_s,
            "lava_s_per_image": lava_s / args.n, "lava_ms_per_step": 1000 * lava_s / pipe.lava_steps,
            "reference": reference, "max_abs_image_diff": diff, "spike_counts_equal": equal,
            "neurons": sum(int(c) for _p, c in net.populations.values()),
            "processes": len(net.processes) + 1 + len(net.populations), "backend": result["target"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/lava_runtime.md"))
    add_pixel_model_option(parser)
    parser.add_argument("-n", type=int, default=3, help="images")
    parser.add_argument("--steps", type=int, default=10, help="DDIM steps")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)  # the Lava run is single-threaded in the parent too: compare like with like

    model, schedule, _ = load_model(args.model)
    cfg = model.config
    single = single_calls(model)
    noise = initial_noise(args.n, (cfg.in_channels, cfg.image_size, cfg.image_size), args.seed)

    start = time.perf_counter()
    expected32 = sample_torch(model, schedule, args.n, args.steps, noise=noise, progress=False).numpy()
    torch_s = time.perf_counter() - start  # the model as trained, float32, batch of n
    # The reference for the float path: the same model in float64, one image at a time for spikes per image
    model64 = copy.deepcopy(model).double()
    expected, torch_spikes = [], []
    for i in range(args.n):
        stats = {}
        expected.append(sample_torch(model64, schedule, 1, args.steps, noise=noise[i:i + 1].double(), progress=False,
                                     stats=stats)[0].numpy())
        torch_spikes.append(stats)

    rows, layers = {}, {}
    for mode, pipelined in (("pipelined", True), ("one at a time", False)):
        result, lava_s = lava_run(model, schedule, noise, args.steps, pipelined)
        equal = True
        for name in model.spiking_layers:
            lava = result["counters"][name]["active"].sum(1).tolist()  # the T steps the model computes in
            ref = [s[name] for s in torch_spikes]
            equal &= lava == ref
            if pipelined:
                layers[name] = {"lava": lava, "torch": ref, "equal": lava == ref,
                                "lava_spikes_outside_evaluations": result["counters"][name]["idle"]}
        rows[mode] = _row(args, result, lava_s, float(np.abs(result["images"] - np.stack(expected)).max()), equal,
                          "PyTorch float64")
        print(mode, rows[mode])

    # Fixed point: Lava's fixed_pt models (netx chains inside) against the bit-exact simulator
    fixed, lava_s = lava_run(model, schedule, noise, args.steps, True, fixed_point=True)
    start = time.perf_counter()
    sim = sample_sim(compile_sampler(sampler_graphs(model, schedule), fixed_point=True), args.n, args.steps,
                     noise=noise.numpy())
    sim_s = time.perf_counter() - start
    equal = all(np.array_equal(fixed["counters"][k]["active"], sim["counters"][k]["active"]) for k in sim["counters"])
    rows["fixed point, pipelined"] = _row(args, fixed, lava_s, float(np.abs(fixed["images"] - sim["images"]).max()),
                                          equal, "bit-exact simulator")
    print(rows["fixed point, pipelined"])
    fixed_vs_float = float(np.abs(sim["images"] - expected32).mean())
    torch_per_image = torch_s / args.n

    payload = {"model": cfg.to_dict(), "runs": rows, "torch_float32_s_per_image": torch_per_image, "layers": layers,
               "single_calls": single, "fixed_point_sim_s": sim_s, "fixed_vs_float_mean_abs_image_diff": fixed_vs_float,
               "netx_chains": fixed["network"].netx_chains}
    first = rows["pipelined"]
    body = [
        f"{args.n} images x {args.steps} DDIM steps in one Lava run ({first['processes']} Lava processes, "
        f"{first['neurons']} neurons; a denoiser call spans a window of {first['window']} Lava steps). Pipelined, a "
        f"new call enters the network every {first['period']} Lava steps while up to {first['images_in_flight']} "
        "images are in flight; one at a time, every call waits for the previous one to leave. The wall time "
        "includes building, compiling and starting the Lava network. PyTorch (float32, batch of "
        f"{args.n}, 1 thread): {torch_per_image:.2f} s per image. The float path computes in float64 (our float64 "
        "conv process; Lava's float neurons and Dense already are), and is compared with the model run in float64.",
        "",
        "| run | Lava steps | s per image | ms per Lava step | compared with | max abs image diff | spike counts equal |",
        "|---|---:|---:|---:|---|---:|:---:|",
        *[f"| {mode} | {r['lava_steps']} | {r['lava_s_per_image']:.1f} | {r['lava_ms_per_step']:.0f} | {r['reference']} | "
          f"{r['max_abs_image_diff']:.2e} | {'yes' if r['spike_counts_equal'] else 'NO'} |" for mode, r in rows.items()],
        "",
        f"Fixed point runs Lava's `fixed_pt` models with Loihi integers; the chains {fixed['network'].netx_chains} are "
        "lava-dl netx networks loaded from HDF5 files we write. The bit-exact simulator (`spikediff.hardware_sim`) "
        f"made the same {args.n} images in {sim_s:.2f} s, compiling included as for Lava ({args.n / sim_s:.2f} images/s, "
        f"{rows['fixed point, pipelined']['lava_s'] / sim_s:.0f}x faster than Lava here). Fixed point vs float "
        f"(PyTorch, float32): mean abs pixel difference {fixed_vs_float:.3f} (pixels in [-1, 1]).",
        "",
        f"Single denoiser calls ({single['calls']}, t = {single['timesteps']}, no DDIM feedback): max abs readout "
        f"difference {single['max_abs_readout_diff']:.1e}, spike counts per layer equal: "
        f"{'yes' if single['spike_counts_equal'] else 'NO'}.",
        "",
        "Spike counts compare the T steps each layer computes in (PyTorch counts only those). Per layer, Lava "
        "(pipelined) vs PyTorch, summed over the images:",
        "",
        "| layer | Lava | PyTorch | Lava spikes outside any evaluation |",
        "|---|---:|---:|---:|",
        *[f"| {k} | {sum(v['lava']):.0f} | {sum(v['torch']):.0f} | {v['lava_spikes_outside_evaluations']:.0f} |"
          for k, v in layers.items()],
    ]
    write_report(args.out, f"Lava CPU simulator: {args.model}, Loihi2SimCfg floating and fixed point", payload,
                 body)


if __name__ == "__main__":
    main()
