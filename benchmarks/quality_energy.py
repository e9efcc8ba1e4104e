"""FID against energy per image: every sampler at several step counts and solvers, the published figures marked.

Usage: python benchmarks/quality_energy.py --out benchmarks/results/quality_energy.md
       [--model NAME=CKPT ...] [--steps 5 10 20 50] [--solvers ddim dpm++] [--unmask random confidence]
       [-n 1000] [--ref-n 5000] [--merge]

Each point is one sampler at one step count and solver: FID of N fixed-point samples (the deployed model, bit-exact
simulator) against the first N ref training images of its dataset, and energy per image on the Loihi 2 profile
(64 images through the simulator, priced by ``spikediff report``'s cost model). Samples, features and reports are
cached per checkpoint content (``model_table.cache_dir``), so a rerun only makes what is missing. spiking-vq
samplers have no solver: they appear once per step count (unmasking steps, at most 49) and unmasking order
(``--unmask``; the solver column names it where it is not the random one).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _report import write_report
from model_table import cache_dir, kept_rows

from spikediff.checkpoint import load_model, trained_on
from spikediff.diffusion import kinds
from spikediff.diffusion.absorbing import UNMASK_ORDERS
from spikediff.hardware_sim.report import make_report
from spikediff.metrics.evaluation import evaluate

# published FIDs (see the README; no energy is published for any of them)
PUBLISHED = {"mnist": {"FSDDIM": 3.99, "SDDPM": 29.48, "Spiking-Diffusion": 37.50},
             "fashion-mnist": {"FSDDIM": 9.17, "SDDPM": 21.38, "Spiking-Diffusion": 91.98}}
# the project's quality-energy targets (FID at N = 10k, fixed point; Loihi 2 mJ per image), shaded on the plot
TARGETS = {"mnist": (30.0, 3.0), "fashion-mnist": (40.0, 3.0)}


def measure(name: str, ckpt: str, steps: list, solvers: list, n: int, ref_n: int, command: str,
            orders: tuple = ("random",)) -> list:
    model, schedule, raw = load_model(ckpt)
    kind = kinds.of_model(model)
    data = trained_on(raw)
    cache = cache_dir(ckpt)
    rows = []
    # spiking-vq samplers have no solver; their column holds the unmasking order where it is not the random one
    variants = [(s, {"solver": s}) for s in solvers] if kind.name != "spiking-vq" else \
        [(None if o == "random" else o, {"unmask": o}) for o in orders]
    for solver, given in variants:
        for k in steps:
            if kind.name == "spiking-vq" and k > 49:
                continue
            options = kind.options(**given)
            tag = f"{k}steps" + (f"-{solver}" if solver else "")
            report = make_report(model, schedule, cache / f"report-{tag}", n=64, steps=k, compare_float=False,
                                 progress=False, source=str(ckpt), **options)
            energy = {c["profile"]: c["energy_per_image_J"] for c in report["cost"]}
            r = evaluate(model, schedule, cache, data, n, k, "sim", ref_split="train", ref_n=ref_n, source=str(ckpt),
                         **options)
            rows.append({"model": name, "kind": kind.name, "data": data, "checkpoint": str(ckpt),
                         "checkpoint_digest": cache.name, "steps": k,
                         "solver": solver or "-", "fid": r["fid"], "kid": r["kid"], "n": r["n"], "ref_n": ref_n,
                         "energy_per_image_J": energy, "command": command})
            print(rows[-1])
    return rows


def plot(rows: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    datasets = sorted({r["data"] for r in rows})
    fig, axes = plt.subplots(1, len(datasets), figsize=(6.4 * len(datasets), 4.6), squeeze=False)
    for ax, data in zip(axes[0], datasets):
        mine = [r for r in rows if r["data"] == data]
        sizes = sorted({(r["n"], r["ref_n"]) for r in mine})
        def series(r):
            return r["model"], r["solver"], r["n"], r["ref_n"]

        for (model, solver, n, ref_n) in dict.fromkeys(map(series, mine)):
            pts = sorted((r for r in mine if series(r) == (model, solver, n, ref_n)), key=lambda r: r["steps"])
            x = [r["energy_per_image_J"]["loihi2"] * 1e3 for r in pts]
            y = [r["fid"] for r in pts]
            label = model + ("" if solver == "-" else f" ({solver})") + ("" if len(sizes) == 1 else f", N = {n} vs {ref_n}")
            ax.plot(x, y, marker="o" if n == sizes[0][0] else "s", label=label)
            for r, xi, yi in zip(pts, x, y):
                ax.annotate(str(r["steps"]), (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7)
        for i, (paper, fid) in enumerate(PUBLISHED.get(data, {}).items()):
            ax.axhline(fid, linestyle="--", linewidth=0.8, color=f"C{7 + i % 3}")
            ax.text(0.02, fid, f" {paper} {fid:g} (published; no energy)", fontsize=7,
                    va="bottom", transform=ax.get_yaxis_transform(), color=f"C{7 + i % 3}")
        if data in TARGETS:
            fid, mj = TARGETS[data]
            left = min(r["energy_per_image_J"]["loihi2"] * 1e3 for r in mine) / 1.5
            ax.fill_between([left, mj], 0, fid, color="C2", alpha=0.12, zorder=0,
                            label=f"target: FID <= {fid:g} (N = 10k) at <= {mj:g} mJ")
            ax.set_xlim(left=left)
            ax.set_ylim(bottom=0)
        ax.set_xscale("log")
        for axis in (ax.xaxis.set_major_formatter, ax.xaxis.set_minor_formatter):  # 1 2 3 5 10 20 ... in mJ
            axis(FuncFormatter(lambda v, _pos: f"{v:g}" if f"{v:.0e}"[0] in "1235" else ""))
        ax.set_xlabel("Loihi 2 energy per image (mJ, spikediff's cost model)")
        ax.set_ylabel("FID of fixed-point samples vs training images" if len(sizes) > 1 else
                      f"FID, N = {sizes[0][0]} fixed-point samples vs {sizes[0][1]} training images")
        ax.set_title(f"{data}: quality against energy (numbers: denoising steps)", fontsize=10)
        ax.legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/quality_energy.md"))
    ap.add_argument("--model", action="append", metavar="NAME=CKPT", required=True)
    ap.add_argument("--steps", type=int, nargs="+", default=[5, 10, 20, 50])
    ap.add_argument("--solvers", nargs="+", default=["ddim", "dpm++"])
    ap.add_argument("--unmask", nargs="+", default=["random"], choices=UNMASK_ORDERS,
                    help="spiking-vq samplers: the unmasking orders to measure (shown in the solver column)")
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("--ref-n", type=int, default=5000)
    ap.add_argument("--merge", action="store_true", help="keep the rows of the table that this run does not measure")
    args = ap.parse_args()
    command = "python " + " ".join(sys.argv)
    rows = []
    for item in args.model:
        name, ckpt = item.split("=", 1)
        rows += measure(name, ckpt, args.steps, args.solvers, args.n, args.ref_n, command, tuple(args.unmask))
    if args.merge:
        key = lambda r: (r["model"], r["steps"], r["solver"], r["n"])  # noqa: E731
        rows = kept_rows(args.out, {key(r) for r in rows}, {r["model"]: r["checkpoint_digest"] for r in rows},
                         key=key, label=lambda r: f"row at {r['steps']} steps") + rows
    figure = args.out.parent / args.out.stem / "fid_energy.png"
    plot(rows, figure)
    body = ["Fixed-point samples (the deployed model on the bit-exact simulator); energy per image on the Loihi 2 "
            "profile from 64 images. Published FIDs are drawn as dashed lines: none of them comes with an energy. "
            "The shaded region is the project's target (FID at N = 10k against 10k training images); FID falls "
            "with N (fewer samples bias it upward), so a point at N = 1000 against 5000 is not yet measured against "
            "it.",
            "", f"![FID against energy]({args.out.stem}/{figure.name})", "",
            "| model | solver | steps | FID | KID x 1e-3 | N | N ref | Loihi 2 mJ / image | Loihi 1 mJ / image |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: (r["data"], r["model"], r["solver"], r["steps"])):
        e = r["energy_per_image_J"]
        body.append(f"| {r['model']} | {r['solver']} | {r['steps']} | {r['fid']:.2f} | {r['kid'] * 1e3:.2f} | {r['n']} | "
                    f"{r['ref_n']} | {e['loihi2'] * 1e3:.3g} | {e['loihi1'] * 1e3:.3g} |")
    body += ["", "Commands behind the rows:", ""] + [f"- `{c}`" for c in dict.fromkeys(r["command"] for r in rows)]
    write_report(args.out, "Quality against energy per image", {"rows": rows}, body)


if __name__ == "__main__":
    main()
