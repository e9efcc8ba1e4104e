"""Bring your own NIR graph: a small snnTorch network, trained for a few seconds, exported with snnTorch's own
``export_to_nir``, then run by spikediff from the .nir file alone, as a user of another framework would.

    python examples/bring_your_own_nir.py [--out out/byo-nir] [--train-steps 150]

The task is a toy: 12 Poisson-like input channels, class 0 drives the first six harder, class 1 the last six; the
network counts output spikes. What the script shows:

1. snnTorch 1.0 + nir 1.0.8: ``export_to_nir`` works when every ``snn.Leaky`` has per-neuron ``beta`` and
   ``threshold`` tensors (scalars become 0-d arrays that ``nir.LIF`` / ``infer_types`` reject) and the sample has no
   batch dimension.
2. The reset: NIR 1.0's LIF resets to ``v_reset`` in the step of the spike, and snnTorch's exporter writes
   v_reset = 0 whatever the module does. Train with ``reset_mechanism="zero", reset_delay=False`` and the file
   means what the trained network does (snnTorch's default, subtract with a delayed reset, would not).
3. ``spikediff inspect``, ``spikediff run`` (float and ``--fixed-point``, checked against the bit-exact simulator)
   and ``spikediff report`` on the file; the key figures are printed.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nir
import numpy as np
import snntorch as snn
import torch
from snntorch import utils as snn_utils
from snntorch.export_nir import export_to_nir

N_IN, N_HID, N_OUT, T = 12, 24, 2, 10
BETA = 0.75  # dt/tau = 0.25: on Loihi's 1/4096 decay grid, so fixed point keeps it exactly

parser = argparse.ArgumentParser()
parser.add_argument("--out", type=Path, default=Path("out/byo-nir"))
parser.add_argument("--train-steps", type=int, default=150)
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()
args.out.mkdir(parents=True, exist_ok=True)
torch.manual_seed(args.seed)


def data(n: int, generator: torch.Generator) -> tuple:
    """(spikes (n, T, N_IN), labels (n,)): the labelled half of the inputs fires with p = 0.5, the other with 0.1."""
    labels = torch.randint(0, 2, (n,), generator=generator)
    p = torch.full((n, N_IN), 0.1)
    for c in (0, 1):
        p[labels == c, c * N_IN // 2:(c + 1) * N_IN // 2] = 0.5
    return (torch.rand(n, T, N_IN, generator=generator) < p[:, None]).float(), labels


def leaky(n: int, **kw) -> snn.Leaky:
    """Per-neuron beta and threshold (the export needs them); reset to zero in the step of the spike (what the
    NIR file will say)."""
    return snn.Leaky(beta=torch.full((n,), BETA), threshold=torch.ones(n), reset_mechanism="zero", reset_delay=False,
                     init_hidden=True, **kw)


net = torch.nn.Sequential(torch.nn.Linear(N_IN, N_HID), leaky(N_HID), torch.nn.Linear(N_HID, N_OUT),
                          leaky(N_OUT, output=True))


def run_snntorch(x: torch.Tensor) -> torch.Tensor:
    """Output spikes (n, T, N_OUT) of the snnTorch network itself."""
    snn_utils.reset(net)
    return torch.stack([net(x[:, t])[0] for t in range(T)], 1)


# 1. train for a few seconds (surrogate gradients, cross entropy on the spike counts)
start = time.perf_counter()
gen = torch.Generator().manual_seed(args.seed)
opt = torch.optim.Adam(net.parameters(), lr=5e-3)
for _ in range(args.train_steps):
    x, y = data(64, gen)
    loss = torch.nn.functional.cross_entropy(run_snntorch(x).sum(1), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
x_test, y_test = data(32, torch.Generator().manual_seed(args.seed + 1))
with torch.no_grad():
    torch_spikes = run_snntorch(x_test).numpy()
print(f"trained {args.train_steps} steps in {time.perf_counter() - start:.1f} s; snnTorch test accuracy "
      f"{(torch_spikes.sum(1).argmax(1) == y_test.numpy()).mean():.1%}")

# 2. export with snnTorch's own exporter (no batch dimension in the sample) and write the file
snn_utils.reset(net)
with torch.no_grad():
    graph = export_to_nir(net, torch.zeros(N_IN))
path = args.out / "classifier.nir"
nir.write(path, graph)
np.save(args.out / "x_test.npy", x_test.numpy())  # (N, T, 12) spike trains
print(f"wrote {path}: " + ", ".join(f"{k} {type(v).__name__}" for k, v in graph.nodes.items()))


# 3. spikediff on the file, through its command line
def spikediff(*argv) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    res = subprocess.run([sys.executable, "-m", "spikediff", *map(str, argv)], capture_output=True, text=True, env=env)
    if res.returncode != 0:
        sys.exit(f"spikediff {' '.join(map(str, argv))} failed:\n{res.stderr}")
    return res.stdout


print("\n$ spikediff inspect classifier.nir --snn-steps 10")
print(spikediff("inspect", path, "--snn-steps", T))

results = {}
for label, flags in (("float", []), ("fixed point", ["--fixed-point"])):
    out = args.out / ("run-fixed" if flags else "run-float")
    print(f"$ spikediff run classifier.nir --input x_test.npy {''.join(f + ' ' for f in flags)}-o {out.name}/")
    print(spikediff("run", path, "--input", args.out / "x_test.npy", *flags, "-o", out, "--quiet"), end="")
    arrays = np.load(out / "outputs.npz")
    counters = json.loads((out / "counters.json").read_text())
    results[label] = (arrays["output"], counters)

lava_float, _ = results["float"]
lava_fixed, fixed_counters = results["fixed point"]
differ = int((lava_float != torch_spikes).sum())
print(f"\nLava float vs snnTorch itself: {int(torch_spikes.sum())} output spikes, {differ} (neuron, step) entries "
      f"differ")
for label, (spikes, counters) in results.items():
    acc = (spikes.sum(1).argmax(1) == y_test.numpy()).mean()
    per = {k: round(v["spikes_per_inference"], 1) for k, v in counters["populations"].items()}
    print(f"Lava {label:11s}: accuracy {acc:.1%}; spikes per inference {per}")
print(f"fixed point: Lava equals the bit-exact simulator: {fixed_counters['bit_exact_vs_simulator']}")

print("\n$ spikediff report classifier.nir --input x_test.npy -o report/")
print(spikediff("report", path, "--input", args.out / "x_test.npy", "-o", args.out / "report"), end="")
report = json.loads((args.out / "report" / "report.json").read_text())
for c in report["cost"]:
    if c["profile"] in report["chips"]:
        cores = report["chips"][c["profile"]]["cores"]
        print(f"{c['profile']}: {c['energy_per_image_J'] * 1e9:.1f} nJ and {c['time']['per_image_s'] * 1e6:.2f} us per "
              f"inference on {cores} cores")
