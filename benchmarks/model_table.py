"""The headline table: per model and backend, FID/KID, activity, energy per image on every hardware
profile and for the ANN twin, cores, and the speed of every runtime (Lava CPU, bit-exact simulator,
PyTorch, onnxruntime for the unrolled SNN and the ANN twin).

Usage: python benchmarks/model_table.py --out benchmarks/results/model_table.md [-n 1000 10000] [--ref-n 5000 10000]
       [--model mnist=runs/mnist/model.pt --model mnist-vq=runs/vq-mnist/model.pt ...]   (default: every
       shipped model) [--backends sim torch] [--merge] [--no-timing]
       python benchmarks/model_table.py --refresh-energy   (the cost columns again, FIDs and speeds kept)
       python benchmarks/model_table.py --refresh-speeds --model NAME=CKPT   (that checkpoint's rows timed again)
The lateral-selection ablation (benchmarks/lateral_ablation.py) trains its four variants and measures them
with this table's code.
FID is against the first --ref-n training images of the model's dataset. Samples and their Inception features
are cached under ~/.cache/spikediff/bench, one folder per checkpoint content, so a rerun with a larger -n only
generates what is missing.
--merge keeps the rows already in the table that this run does not measure again (model, backend, N, reference
N), each with the command that made it: the table can then hold rows at several N (compare FID at equal N).
--no-timing leaves the runtimes untimed (a larger -n of a model already in the table: its speeds are kept).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _report import machine_info, machine_name, write_report

from spikediff.checkpoint import SHIPPED_MODELS, load_model, resolve, trained_on, trained_steps
from spikediff.diffusion import kinds
from spikediff.export.deployment import compile_sampler
from spikediff.export.nir_graph import sampler_graphs
from spikediff.export.onnx_export import export_onnx, run_onnx
from spikediff.hardware_sim.report import make_report
from spikediff.hardware_sim.sampler import sample_sim
from spikediff.metrics.evaluation import evaluate
from spikediff.runtime.run import sample_lava

# the speed columns of a row (None where a runtime is not measured)
SPEED_COLUMNS = (("Lava s / image", "lava_s_per_image"), ("sim images/s", "sim_images_per_s"),
                 ("torch images/s", "torch_images_per_s"), ("onnx SNN images/s", "onnx_snn_images_per_s"),
                 ("onnx twin images/s", "onnx_twin_images_per_s"))
SPEEDS = tuple(key for _, key in SPEED_COLUMNS)


def _rate(fn, n: int) -> float:
    start = time.perf_counter()
    fn()
    return n / (time.perf_counter() - start)


def speeds(model, schedule, steps: int, n_lava: int) -> dict:
    """Images per second (Lava: seconds per image) of every runtime; ONNX: each network's evaluations of an
    image (the loop network ``steps`` times, a decoder once) on its calibration inputs."""
    kind = kinds.of_model(model)
    sd = compile_sampler(sampler_graphs(model, schedule), fixed_point=True)
    out = {"torch_images_per_s": _rate(lambda: kind.sample_torch(model, schedule, 64, steps, progress=False), 64),
           "sim_images_per_s": _rate(lambda: sample_sim(sd, 64, steps), 64),
           "lava_s_per_image": 1 / _rate(lambda: sample_lava(sd, n_lava, steps, target="sim", progress=False), n_lava)}
    networks = kind.networks(model)
    with tempfile.TemporaryDirectory() as tmp:
        for key, twin in (("onnx_snn_images_per_s", False), ("onnx_twin_images_per_s", True)):
            seconds = 0.0
            for role, (net, _extra) in networks.items():
                inp = kind.calibration(role, dict(sd.networks[role].metadata))[:64].astype(np.float32)
                path = export_onnx(net, Path(tmp) / f"{key}-{role}.onnx", twin=twin)
                run_onnx(path, inp[:2])
                per_eval = 1 / _rate(lambda p=path, x=inp: run_onnx(p, x), len(inp))
                seconds += per_eval * (steps if role == "denoiser" else 1)
            out[key] = 1 / seconds  # the host-side updates are negligible beside the networks
    return out


# published FIDs, per model kind and dataset (the papers' own figures; PUBLISHED_NOTE says where from)
PUBLISHED = {("fsddim", "mnist"): "FSDDIM 3.99, SDDPM 29.48",
             ("fsddim", "fashion-mnist"): "FSDDIM 9.17, SDDPM 21.38",
             ("spiking-vq", "mnist"): "Spiking-Diffusion 37.50",
             ("spiking-vq", "fashion-mnist"): "Spiking-Diffusion 91.98"}
PUBLISHED.update({("latent-ddim", data): figures for (k, data), figures in PUBLISHED.items() if k == "fsddim"})
PUBLISHED_NOTE = ("Published FIDs (lower is better), as the papers report them: FSDDIM (Watanabe, Mukuta and Harada, "
                  "2023) at T = 8 on MNIST and T = 4 on Fashion-MNIST, 1000 DDIM steps, 10k samples, clean-fid; SDDPM "
                  "(Cao et al., WACV 2024); Spiking-Diffusion (Liu et al., 2023), a non-standard FID on 1,280 samples. "
                  "FID falls as N grows: compare rows only at the same N.")


def kind(model, schedule) -> str:
    """The sampler kind, fsddim with its lateral-selection parts if any (the ablation's variants; a spiking U-Net
    has neither: FSDDIM's own architecture)."""
    name = kinds.of_model(model).name
    if name != "fsddim":
        return name
    cfg = model.config
    return " + ".join(["fsddim"] + [part for part in ("lateral", "selection") if getattr(cfg, part, False)])


def row_key(row: dict) -> tuple:
    """What a row measures: model, backend, N and reference N (from "<data> <split>, first <n> images")."""
    return row["model"], row["backend"], row["n"], int(_ref_n(row))


def kept_rows(out: Path, replaced: set, digests: dict | None = None, key=row_key,
              label=lambda r: f"{r['backend']} row at N = {r['n']}") -> list:
    """--merge: the rows of an earlier table that this run does not measure again (``key`` of a row in
    ``replaced``). ``digests`` ({model: checkpoint digest} of this run): a model's rows measured on other weights
    than its checkpoint's now (a shipped model replaced) are dropped, not kept beside the new ones under the same
    name; so are the rows of the same checkpoint under another name that this run measures again under its name
    (a checkpoint first measured by path, then shipped). ``quality_energy.py`` and ``vq_codebook.py`` merge their
    tables with it too (their own ``key``)."""
    path = out.with_suffix(".json")
    if not path.is_file():
        return []
    old = json.loads(path.read_text())
    digests = digests or {}
    stale = [r for r in old["rows"] if r["model"] in digests and r.get("checkpoint_digest") != digests[r["model"]]]
    for r in stale:
        print(f"dropped the {r['model']} {label(r)}: measured on another checkpoint", file=sys.stderr)
    renamed = [r for r in old["rows"] if r["model"] not in digests for name, digest in digests.items()
               if r.get("checkpoint_digest") == digest and key({**r, "model": name}) in replaced]
    for r in renamed:
        print(f"dropped the {r['model']} {label(r)}: the same checkpoint measured again under another name",
              file=sys.stderr)
    return [{"command": old.get("command"), **r} for r in old["rows"]
            if key(r) not in replaced and r not in stale and r not in renamed]


def keep_speeds(rows: list, old: list) -> None:
    """--no-timing: each row takes the speeds of an earlier timed row of the same checkpoint (by content), if any:
    the runtimes' speeds depend on neither N nor the name it was measured under (a model renamed when another
    took its shipped name keeps them)."""
    for r in rows:
        timed = next((o for o in old if o.get("checkpoint_digest") == r["checkpoint_digest"]
                      and o.get("lava_s_per_image") is not None), None)
        if timed is not None:
            r.update({key: timed[key] for key in SPEEDS + ("speeds_machine",) if key in timed})


def with_speeds(rows: list, timed: dict, command: str, machine: str, earlier_machine: str) -> list:
    """--refresh-speeds: the rows with the speeds timed now ({(checkpoint digest, DDIM steps): speeds}) where they
    measure that checkpoint at those steps (any N, any name), each marked with the command and machine that
    timed them; the other rows as ``stamp_machine`` leaves them (``earlier_machine``: the table's until now)."""
    def retimed(r):
        key = (r.get("checkpoint_digest"), r["denoising_steps"])
        return {**r, **timed[key], "speeds_command": command, "speeds_machine": machine} if key in timed else r

    return stamp_machine([retimed(r) for r in rows], earlier_machine)


def stamp_machine(rows: list, machine: str) -> list:
    """The rows, those with speeds but no machine of their own marked as timed on ``machine``: the table they come
    from named it in its header, which the table written now will not."""
    return [{**r, "speeds_machine": machine}
            if r.get("lava_s_per_image") is not None and "speeds_machine" not in r else r for r in rows]


def _opt(value) -> str:
    return "-" if value is None else f"{value:.3g}"


def _mj(joules: float) -> str:
    return f"{joules * 1e3:.3g} mJ"


def _range(r: dict, profile: str) -> str:
    lo_hi = r.get("energy_range_J", {}).get(profile)
    return f" [{lo_hi[0] * 1e3:.2g}, {lo_hi[1] * 1e3:.2g}]" if lo_hi else ""


def _ref_n(r: dict) -> str:
    return r["reference"].split()[-2]  # "<data> <split>, first <n> images"


# (header, right-aligned, cell of a row); speed columns no row has (measured without timing) are left out
COLUMNS = [
    ("model", False, lambda r: r["model"]),
    ("backend", False, lambda r: r["backend"]),
    ("FID", True, lambda r: f"{r['fid']:.2f}"),
    ("KID", True, lambda r: f"{r['kid'] * 1e3:.2f}"),
    ("N", True, lambda r: str(r["n"])),
    ("N ref", True, _ref_n),
    ("published FID", False, lambda r: PUBLISHED.get((r.get("kind", "fsddim"), r["reference"].split()[0]), "-")),
    ("DDIM steps", True, lambda r: str(r["denoising_steps"])),
    ("T", True, lambda r: str(r["T"])),
    ("spikes / image", True, lambda r: f"{r['spikes_per_image']:.3g}"),
    ("synaptic ops / image", True, lambda r: f"{r['synaptic_ops_per_image']:.3g}"),
    ("energy Loihi 1", True, lambda r: _mj(r["energy_per_image_J"]["loihi1"])),
    ("energy Loihi 2 [low, high]", True, lambda r: _mj(r["energy_per_image_J"]["loihi2"]) + _range(r, "loihi2")),
    ("Loihi 2 one image alone", True, lambda r: _mj(r["single_image_J"]["loihi2"]) if "single_image_J" in r else "-"),
    ("energy 45 nm SNN", True, lambda r: _mj(r["energy_per_image_J"]["ac_mac_45nm"])),
    ("ANN twin MACs / image", True, lambda r: f"{r['ann_twin_macs_per_image']:.3g}"),
    ("ANN twin 45 nm", True, lambda r: _mj(r["ann_twin_J"])),
    ("cores Loihi 2 (fewest)", True,
     lambda r: str(r["cores"]["loihi2"]) + (f" ({r['fewest_cores']['loihi2']})" if "fewest_cores" in r else "")),
    *((header, True, lambda r, key=key: _opt(r.get(key))) for header, key in SPEED_COLUMNS),
]
SPEED_HEADERS = {header for header, _ in SPEED_COLUMNS}


def table_body(rows: list, command: str) -> list:
    columns = [c for c in COLUMNS if c[0] not in SPEED_HEADERS or any(c[2](r) != "-" for r in rows)]
    timed = any(c[0] in SPEED_HEADERS for c in columns)
    prose = ("FID and KID (x 1e-3) of N samples against the first N ref training images (standard Inception-v3 "
             "pool3 features, pytorch-fid protocol); sim = Loihi fixed point, the deployed model (bit-exact "
             "simulator); torch = the float model. Activity and energy per image from 64 images in fixed point; "
             "energy with each hardware profile (see the README) and the ANN twin under the 45 nm convention. Loihi 2: "
             "images streaming through the least-energy mapping, [low, high] the cost model's range; one image alone "
             "pays the powered chips' static power over its whole latency; cores of that mapping (of the fewest-cores "
             "one).")
    if any(r.get("kind") == "spiking-vq" for r in rows):
        prose += (" spiking-vq rows (Spiking-Diffusion): denoising steps are unmasking steps of the SDID network, "
                  "and an image also costs one pass of the token decoder (included in every figure).")
    if any(r.get("kind") == "latent-ddim" for r in rows):
        prose += (" latent-ddim rows: DDIM steps of the latent denoiser, and an image also costs one pass of the "
                  "autoencoder's spiking decoder (included in every figure).")
    if timed:
        prose += (" Speeds on this machine: Lava = `Loihi2SimCfg` fixed point (--n-lava images in one run, Lava's "
                  "start-up included), sim = bit-exact simulator, onnx = onnxruntime CPU network evaluations "
                  "(x DDIM steps).")
    body = [prose, "", "| " + " | ".join(c[0] for c in columns) + " |",
            "|" + "".join("---:|" if c[1] else "---|" for c in columns)]
    body += ["| " + " | ".join(c[2](r) for c in columns) + " |" for r in rows]
    body += ["", PUBLISHED_NOTE, "", "Commands behind the rows:", ""]
    body += [f"- `{c}`" for c in dict.fromkeys(r.get("command", command) for r in rows)]
    refreshed = list(dict.fromkeys(r["costs_command"] for r in rows if r.get("costs_command")))
    if refreshed:  # kept by the rows, so that a later --merge still says so
        body += ["", "Activity and cost columns of the rows above measured again with the current cost model: "
                 + ", ".join(f"`{c}`" for c in refreshed)]
    note = speeds_note(rows)
    if note:
        body += ["", note]
    return body


def speeds_note(rows: list) -> str:
    """Which machine timed which rows, when the rows' speeds come from more than one machine (the header names
    only the last run's); each row keeps its machine, and a ``--refresh-speeds`` row its command."""
    timed = {}
    for r in rows:
        if r.get("speeds_machine") and r.get("lava_s_per_image") is not None:
            timed.setdefault((r["speeds_machine"], r.get("speeds_command")), []).append(r["model"])
    if len({machine for machine, _ in timed}) < 2:
        return ""
    return "Speeds timed on more than one machine: " + "; ".join(
        f"{', '.join(dict.fromkeys(models))} on {machine}" + (f" (`{command}`, after their FIDs)" if command else "")
        for (machine, command), models in timed.items()) + "."


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/model_table.md"))
    ap.add_argument("--model", action="append", metavar="NAME=CKPT",
                    help=f"models to measure (default: the shipped ones, {' '.join(SHIPPED_MODELS)})")
    ap.add_argument("-n", type=int, nargs="+", default=[1000], help="samples per FID (several: a row for each)")
    ap.add_argument("--ref-n", type=int, nargs="+", default=[10000],
                    help="reference training images, one per -n")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--backends", nargs="+", default=["sim", "torch"])
    ap.add_argument("--n-lava", type=int, default=2, help="images timed on Lava")
    ap.add_argument("--merge", action="store_true", help="keep the table's rows that this run does not measure again")
    ap.add_argument("--no-timing", action="store_true",
                    help="do not time the runtimes: a row takes the speeds of the table's row of the same model "
                         "and checkpoint (with --merge), or none")
    ap.add_argument("--refresh-energy", action="store_true",
                    help="measure only the activity and cost columns of the table's rows again, keeping FIDs and speeds")
    ap.add_argument("--refresh-speeds", action="store_true",
                    help="time only the runtimes of the --model checkpoints and give the speeds to the table's rows "
                         "of those checkpoints at --steps, keeping FIDs and costs")
    args = ap.parse_args()
    if args.refresh_speeds and not args.model:
        ap.error("--refresh-speeds: name the checkpoints to time with --model NAME=CKPT")
    if len(args.n) != len(args.ref_n):
        ap.error(f"-n has {len(args.n)} values and --ref-n {len(args.ref_n)}: give one reference size per -n")
    command = "python " + " ".join(sys.argv)
    if args.refresh_energy:
        return refresh_costs(args.out, command)
    models = dict(m.split("=", 1) for m in args.model) if args.model else {name: name for name in SHIPPED_MODELS}
    if args.refresh_speeds:
        return refresh_speeds(args.out, models.values(), args.steps, args.n_lava, command)

    rows, grids = [], {}
    for name, ckpt in models.items():
        got, images = measure(name, ckpt, args.n, args.ref_n, args.steps, args.backends, args.n_lava, command,
                              timing=not args.no_timing)
        rows, grids = rows + got, {**grids, **images}
    if args.merge:
        if args.no_timing:
            keep_speeds(rows, kept_rows(args.out, set()))
        kept = kept_rows(args.out, {row_key(r) for r in rows}, {r["model"]: r["checkpoint_digest"] for r in rows})
        path = args.out.with_suffix(".json")
        rows = stamp_machine(kept, table_machine(json.loads(path.read_text())) if path.is_file() else "unknown") + rows
    write_table(args.out, rows, grids, command, "Models, quality, energy and speed")


def table_machine(table: dict) -> str:
    """The machine named by a committed table's header (which timed its rows that name none themselves)."""
    return machine_name(table["machine"]) if table.get("machine") else "unknown"


def cache_dir(ckpt) -> Path:
    """Where a checkpoint's samples, features and report are kept: named by its content, so one file measured
    under two names (the shipped model as an ablation's base) is sampled once, and a retrained model never
    reuses another's samples."""
    digest = hashlib.sha256(resolve(ckpt).read_bytes()).hexdigest()[:16]
    return Path.home() / ".cache" / "spikediff" / "bench" / digest


def cost_fields(model, schedule, folder: Path, steps: int, ckpt) -> dict:
    """A row's activity and cost columns, from the hardware report of 64 fixed-point images: every network of
    the sampler (an image costs the loop network's runs and a decoder's pass), each chip profile's least-energy
    mapping with its [low, high] range and the single-image figure, and the fewest-cores mapping's cores."""
    report = make_report(model, schedule, folder, n=64, steps=steps, compare_float=False, progress=False,
                         source=str(ckpt))
    totals = [ev["totals"] for ev in report["events_per_image"].values()]
    head = report["headline"]
    chips = {k: v for k, v in head.items() if "cores" in v}
    twin = next(c["ann_twin"] for c in report["cost"] if "ann_twin" in c)
    return {"spikes_per_image": sum(t["spikes"] for t in totals),
            "synaptic_ops_per_image": sum(t["synaptic_ops"] for t in totals),
            "energy_per_image_J": {k: v["energy_per_image_J"] for k, v in head.items()},
            "energy_range_J": {k: v["energy_range_J"] for k, v in head.items()},
            "single_image_J": {k: v["single_image_J"] for k, v in chips.items()},
            "time_per_image_s": {k: v["time_per_image_s"] for k, v in chips.items()},
            "cores": {k: v["cores"] for k, v in chips.items()},
            "fewest_cores": {k: v["fewest_cores"]["cores"] for k, v in chips.items() if "fewest_cores" in v},
            "ann_twin_J": twin["energy_per_image_J"], "ann_twin_macs_per_image": twin["macs_per_image"]}


def refresh_costs(out: Path, command: str) -> None:
    """--refresh-energy: the table's rows with their activity and cost columns measured again (a changed cost
    model), their FIDs and speeds kept; each checkpoint's report is made once."""
    old = json.loads(out.with_suffix(".json").read_text())
    rows, done = [], {}
    for r in old["rows"]:
        key = (r["checkpoint"], r["denoising_steps"])
        if key not in done:
            model, schedule, _raw = load_model(r["checkpoint"])
            done[key] = cost_fields(model, schedule, cache_dir(r["checkpoint"]) / "report", r["denoising_steps"],
                                    r["checkpoint"])
        rows.append({"command": old["command"], **r, **done[key], "costs_command": command})
    write_table(out, rows, {}, command, "Models, quality, energy and speed")


def refresh_speeds(out: Path, checkpoints, steps: int, n_lava: int, command: str) -> None:
    """--refresh-speeds: time each checkpoint's runtimes once and give the speeds to its rows at ``steps`` (the
    speeds depend on neither N nor the model's name), FIDs and costs kept."""
    if not out.with_suffix(".json").is_file():
        sys.exit(f"{out.with_suffix('.json')}: no table to give speeds to; measure its rows first")
    old = json.loads(out.with_suffix(".json").read_text())
    rows = [{"command": old["command"], **r} for r in old["rows"]]
    measured = {(r.get("checkpoint_digest"), r["denoising_steps"]) for r in rows}
    digests = {ckpt: cache_dir(ckpt).name for ckpt in checkpoints}
    for ckpt, digest in digests.items():  # before the timing, which takes minutes
        if (digest, steps) not in measured:
            sys.exit(f"{out}: no row measures {ckpt} at {steps} DDIM steps; nothing to give its speeds to")
    timed = {}
    for ckpt, digest in digests.items():
        model, schedule, _raw = load_model(ckpt)
        timed[(digest, steps)] = speeds(model, schedule, steps, n_lava)
    rows = with_speeds(rows, timed, command, machine_name(machine_info()), table_machine(old))
    write_table(out, rows, {}, command, "Models, quality, energy and speed")


def measure(name: str, ckpt, n, ref_n, steps: int, backends: list, n_lava: int, command: str,
            timing: bool = True) -> tuple:
    """(rows, {(name, backend): grid png}) for one checkpoint: a row per backend and (n, ref_n) pair (both
    ints, or lists of the same length). timing=False leaves the speeds out (None)."""
    model, schedule, raw = load_model(ckpt)
    data = trained_on(raw)  # a run's compact resume file names it in its train_config
    cache = cache_dir(ckpt)
    # every network of the sampler: an image costs the loop network's runs and a decoder's pass
    cost = cost_fields(model, schedule, cache / "report", steps, ckpt)
    if timing:
        speed = {**speeds(model, schedule, steps, n_lava), "speeds_machine": machine_name(machine_info())}
    else:
        speed = dict.fromkeys(SPEEDS)
    rows, grids = [], {}
    sizes = list(zip(np.atleast_1d(n).tolist(), np.atleast_1d(ref_n).tolist()))
    for backend, (n_samples, n_ref) in ((b, size) for b in backends for size in sizes):
        r = evaluate(model, schedule, cache, data, n_samples, steps, backend, ref_split="train", ref_n=n_ref,
                     source=str(ckpt))
        grids[(name, backend)] = Path(r["json"]).with_suffix(".png")
        rows.append({"model": name, "kind": kind(model, schedule), "command": command,
                     "data": data, "checkpoint": str(ckpt), "checkpoint_digest": cache.name,
                     "training_steps": trained_steps(raw),
                     "backend": backend, "fid": r["fid"], "kid": r["kid"], "kid_std": r["kid_std"], "n": r["n"],
                     "reference": r["reference"], "denoising_steps": steps, "T": model.num_steps,
                     **cost, **speed})
    return rows, grids


def write_table(out: Path, rows: list, grids: dict, command: str, title: str, extra: tuple = ()) -> None:
    """The markdown table and JSON at ``out``, the sample grids in a folder named after it; ``extra``: markdown
    lines after the table."""
    body = table_body(rows, command) + list(extra)
    images_dir = out.parent / out.stem
    images_dir.mkdir(parents=True, exist_ok=True)
    for (name, backend), grid in grids.items():
        (images_dir / f"{name}-{backend}.png").write_bytes(grid.read_bytes())
    for name, backend in dict.fromkeys((r["model"], r["backend"]) for r in rows):
        body += ["", f"{name}, {backend}, the first 64 samples:", "",
                 f"![{name} {backend}]({out.stem}/{name}-{backend}.png)"]
    write_report(out, title, {"rows": rows}, body)


if __name__ == "__main__":
    main()
