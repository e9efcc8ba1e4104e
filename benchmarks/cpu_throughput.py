"""Training step time and torch-backend sampling throughput on this machine's CPU.

Usage: python benchmarks/cpu_throughput.py --out benchmarks/results/cpu_throughput.md
Writes a markdown table and a JSON file beside it, with the command and the machine that produced them.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from _report import add_pixel_model_option, write_report

from spikediff.checkpoint import load_model
from spikediff.diffusion import NoiseSchedule, sample_torch
from spikediff.models import DenoiserConfig, SpikingDenoiser


def time_train_step(threads: int, batch: int, repeats: int) -> float:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = SpikingDenoiser(DenoiserConfig())
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    sched = NoiseSchedule()
    x0 = torch.rand(batch, 1, 28, 28) * 2 - 1

    def step():
        t = torch.randint(0, 1000, (batch,))
        noise = torch.randn_like(x0)
        loss = torch.nn.functional.mse_loss(model(sched.add_noise(x0, noise, t), t), noise)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - start) / repeats


def time_sampling(model_name: str, threads: int, n: int, steps: int, batch: int) -> float:
    torch.set_num_threads(threads)
    model, schedule, _ = load_model(model_name)
    sample_torch(model, schedule, 2, num_inference_steps=2, progress=False)  # warm-up
    start = time.perf_counter()
    sample_torch(model, schedule, n, num_inference_steps=steps, batch_size=batch, progress=False)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/cpu_throughput.md"))
    add_pixel_model_option(parser)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, os.cpu_count() or 1])
    parser.add_argument("--train-batch", type=int, default=128)
    parser.add_argument("--train-repeats", type=int, default=10)
    parser.add_argument("--sample-n", type=int, default=64)
    parser.add_argument("--sample-steps", type=int, default=20)
    args = parser.parse_args()

    rows = []
    for threads in sorted(set(args.threads)):
        train_s = time_train_step(threads, args.train_batch, args.train_repeats)
        ips = time_sampling(args.model, threads, args.sample_n, args.sample_steps, batch=64)
        rows.append({"threads": threads, "train_step_s": train_s, "train_images_per_s": args.train_batch / train_s,
                     "sample_images_per_s": ips})
        print(rows[-1], flush=True)

    m = DenoiserConfig()
    payload = {"train_batch": args.train_batch, "sample_steps": args.sample_steps, "sample_n": args.sample_n,
               "model": m.to_dict(), "rows": rows}
    body = [
        f"Default model (C={m.channels}, hidden={m.hidden}, T={m.num_steps}), training batch {args.train_batch}; "
        f"sampling {args.sample_n} images with {args.sample_steps} DDIM steps, batch 64, from {args.model}.",
        "",
        "| threads | train step (s) | train images/s | sampling images/s |",
        "|---:|---:|---:|---:|",
        *[f"| {r['threads']} | {r['train_step_s']:.3f} | {r['train_images_per_s']:.1f} | {r['sample_images_per_s']:.2f} |"
          for r in rows],
    ]
    write_report(args.out, "CPU throughput: training and torch-backend sampling", payload, body)


if __name__ == "__main__":
    main()
